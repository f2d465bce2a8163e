import { randomUUID } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { DecodedFrame } from './frame-decoder.ts'

export interface StageOptions {
  /** Frames up to this many plaintext bytes are held in memory (default 8 MiB); larger ones go to a file. */
  memoryLimit?: number
  /** Directory for staged files (default: the OS temp dir). */
  dir?: string
}

/** A frame whose AEAD tag has verified: its plaintext may now be committed. */
export interface StagedFrame {
  frameNumber: number
  contentType: string
  length: number
  /** Reads the verified plaintext (any number of times until disposed). */
  open(): AsyncIterable<Uint8Array>
  /** Removes the staged file, if any. */
  dispose(): Promise<void>
}

/**
 * Decrypts a whole frame into bounded memory or a temporary file and returns it
 * only once its tag has verified; on failure nothing is left behind. For
 * consumers that cannot stage provisional data themselves.
 */
export async function stageFrame(frame: DecodedFrame, options: StageOptions = {}): Promise<StagedFrame> {
  const base = {
    frameNumber: frame.frameNumber,
    contentType: frame.contentType,
    length: frame.plaintextLength,
  }
  if (frame.plaintextLength <= (options.memoryLimit ?? 8 * 1024 * 1024)) {
    const bytes = new Uint8Array(frame.plaintextLength)
    let offset = 0
    for await (const chunk of frame.plaintext()) {
      bytes.set(chunk, offset)
      offset += chunk.length
    }
    return { ...base, open: () => yieldOnce(bytes), dispose: async () => {} }
  }
  const path = join(options.dir ?? tmpdir(), `pds-transfer-frame-${randomUUID()}`)
  const file = await open(path, 'wx', 0o600)
  try {
    for await (const chunk of frame.plaintext()) await file.write(chunk)
    await file.close()
  } catch (err) {
    await file.close().catch(() => {})
    await rm(path, { force: true })
    throw err
  }
  return {
    ...base,
    open: () => createReadStream(path),
    dispose: () => rm(path, { force: true }),
  }
}

async function* yieldOnce(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes
}
