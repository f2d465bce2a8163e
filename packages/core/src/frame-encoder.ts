import { coalesceChunks } from './coalesce-chunks.ts'
import { WireError } from './errors.ts'
import { frameAad } from './frame-aad.ts'
import { createFrameCipher } from './frame-cipher.ts'
import { encodeFrameHeader } from './frame-header.ts'
import type { FrameKeys } from './key-schedule.ts'
import { LIMITS, MAX_FRAME_PLAINTEXT } from './limits.ts'

/** Plaintext of a frame: bytes in memory, or a stream of chunks whose total is declared up front. */
export type FramePlaintext = Uint8Array | AsyncIterable<Uint8Array> | Iterable<Uint8Array>

/**
 * Writes the frames of one transfer session, numbering them from 0.
 *
 * The header states the ciphertext length before any data, so the caller
 * declares the plaintext length; a stream that yields more or less makes the
 * encoder throw (`LengthMismatch`) and refuse further frames: the HTTP response
 * must then be aborted, never ended cleanly.
 */
export class FrameEncoder {
  private next = 0
  private failed: Error | undefined

  constructor(private readonly keys: FrameKeys) {}

  /** Number the next frame will carry (= frames written so far). */
  get frameCount(): number {
    return this.next
  }

  /** Yields header, then ciphertext chunks as the plaintext arrives, then the 16-byte tag. */
  async *encodeFrame(
    contentType: string,
    plaintext: FramePlaintext,
    length: number,
  ): AsyncGenerator<Uint8Array> {
    if (this.failed) throw this.failed
    if (!Number.isSafeInteger(length) || length < 0 || length > MAX_FRAME_PLAINTEXT) {
      throw new WireError('FrameTooLarge', `plaintext of ${length} bytes does not fit a frame`)
    }
    if (this.next > 0xffff_ffff) throw new WireError('FrameTooLarge', 'frame numbers exhausted')
    const frameNumber = this.next++
    const { did, transferId, algorithm } = this.keys
    const cipher = createFrameCipher(algorithm, this.keys.key(frameNumber), this.keys.nonce(frameNumber))
    cipher.setAAD(frameAad(did, transferId, frameNumber, contentType))
    yield encodeFrameHeader({ frameNumber, contentType, ciphertextLength: length + LIMITS.tagLength })

    let written = 0
    try {
      // Each update is a native call and a new buffer: encrypt in slices of at least 64 KiB.
      for await (const chunk of plaintext instanceof Uint8Array ? [plaintext] : coalesceChunks(plaintext)) {
        written += chunk.length
        if (written > length)
          throw new WireError('LengthMismatch', `frame ${frameNumber}: more than ${length} bytes`)
        if (chunk.length > 0) yield cipher.update(chunk)
      }
      if (written !== length) {
        throw new WireError('LengthMismatch', `frame ${frameNumber}: ${written} of ${length} declared bytes`)
      }
    } catch (err) {
      this.failed = err instanceof Error ? err : new Error(String(err))
      throw err
    }
    const last = cipher.final()
    if (last.length > 0) yield last
    yield cipher.getAuthTag()
  }
}
