import { ByteReader } from './byte-reader.ts'
import { WireError } from './errors.ts'
import { frameAad } from './frame-aad.ts'
import { createFrameDecipher } from './frame-cipher.ts'
import type { FrameHeader } from './frame-header.ts'
import type { FrameKeys } from './key-schedule.ts'
import { LIMITS } from './limits.ts'

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })
/** Largest ciphertext slice decrypted at once; bounds memory whatever the frame size. */
const CHUNK = 1 << 20
/** Decrypted output is handed on once at least this much has gathered (or the frame ends). */
const GATHER = 256 * 1024

export interface DecodeFramesOptions {
  keys: FrameKeys
  /** Frames with a larger ciphertext are refused before any of it is read (default: the uint32 limit). */
  maxCiphertextLength?: number
}

/** A frame whose header has been read; its plaintext is decrypted as it is read. */
export interface DecodedFrame extends FrameHeader {
  plaintextLength: number
  /**
   * The frame's plaintext in chunks of at most 1 MiB. Chunks are provisional:
   * the AEAD tag is checked after the last one, and the iteration only ends
   * normally if it verifies (otherwise it throws `FrameAuthFailed`). Stage what
   * you read and commit only after the loop completes. Can be read once; a frame
   * left unread is still decrypted and verified when the next one is requested.
   */
  plaintext(): AsyncIterable<Uint8Array>
}

/**
 * Reads the frames of an exportAccount response body in order.
 *
 * Every malformation is a `WireError` naming it: `TruncatedHeader`,
 * `ContentTypeTooLong`, `InvalidContentType`, `FrameOutOfOrder`,
 * `FrameTooLarge`, `TruncatedFrame`, `FrameAuthFailed`. The generator ends when
 * the body ends exactly at a frame boundary; whether that end is legitimate is
 * for the caller to decide (the proposal has no end marker; see spec/errata.md).
 */
export async function* decodeFrames(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  options: DecodeFramesOptions,
): AsyncGenerator<DecodedFrame> {
  const reader = new ByteReader(source)
  const maxCiphertext = options.maxCiphertextLength ?? LIMITS.maxCiphertextLength
  try {
    for (let expected = 0; !(await reader.atEnd()); expected++) {
      const header = await readHeader(reader, expected, maxCiphertext)
      let started = false
      let finished = false
      const body = (async function* () {
        yield* decryptBody(reader, options.keys, header)
        finished = true
      })()
      yield {
        ...header,
        plaintextLength: header.ciphertextLength - LIMITS.tagLength,
        plaintext() {
          if (started) throw new Error(`frame ${header.frameNumber}: plaintext already read`)
          started = true
          return body
        },
      }
      if (!started) {
        started = true
        for await (const _ of body);
      }
      if (!finished) {
        // The consumer stopped reading mid-frame: the stream position is lost.
        throw new Error(`frame ${header.frameNumber}: plaintext abandoned before the end`)
      }
    }
  } finally {
    await reader.cancel()
  }
}

async function readHeader(reader: ByteReader, expected: number, maxCiphertext: number): Promise<FrameHeader> {
  const fixed = await reader.readExact(8)
  if (!fixed) throw new WireError('TruncatedHeader', `stream ends inside the header of frame ${expected}`)
  const view = new DataView(fixed.buffer, fixed.byteOffset, 8)
  const frameNumber = view.getUint32(0)
  const typeLength = view.getUint32(4)
  if (frameNumber !== expected) {
    throw new WireError('FrameOutOfOrder', `expected frame ${expected}, got frame number ${frameNumber}`)
  }
  if (typeLength === 0 || typeLength > LIMITS.maxContentTypeLength) {
    throw new WireError('ContentTypeTooLong', `frame ${frameNumber}: content type length ${typeLength}`)
  }
  const typeBytes = await reader.readExact(typeLength)
  const lengthBytes = typeBytes && (await reader.readExact(4))
  if (!typeBytes || !lengthBytes) {
    throw new WireError('TruncatedHeader', `stream ends inside the header of frame ${frameNumber}`)
  }
  let contentType: string
  try {
    contentType = strictUtf8.decode(typeBytes)
  } catch {
    throw new WireError('InvalidContentType', `frame ${frameNumber}: content type is not UTF-8`)
  }
  const ciphertextLength = new DataView(lengthBytes.buffer, lengthBytes.byteOffset, 4).getUint32(0)
  if (ciphertextLength < LIMITS.tagLength) {
    throw new WireError('TruncatedFrame', `frame ${frameNumber}: ciphertext shorter than the AEAD tag`)
  }
  if (ciphertextLength > maxCiphertext) {
    throw new WireError(
      'FrameTooLarge',
      `frame ${frameNumber}: ${ciphertextLength} bytes exceeds ${maxCiphertext}`,
    )
  }
  return { frameNumber, contentType, ciphertextLength }
}

async function* decryptBody(
  reader: ByteReader,
  keys: FrameKeys,
  header: FrameHeader,
): AsyncGenerator<Uint8Array> {
  const { frameNumber, contentType, ciphertextLength } = header
  const decipher = createFrameDecipher(keys.algorithm, keys.key(frameNumber), keys.nonce(frameNumber))
  decipher.setAAD(frameAad(keys.did, keys.transferId, frameNumber, contentType))
  let remaining = ciphertextLength - LIMITS.tagLength
  while (remaining > 0) {
    // Network chunks are ~64 KiB; each one handed down alone costs every consumer stage (blobpack
    // reader, hashing, file write) a round of promises. Decrypted output is gathered to at least
    // 256 KiB (at most 1 MiB) and copied once instead.
    const parts: Uint8Array[] = []
    let gathered = 0
    do {
      const chunk = await reader.readUpTo(Math.min(remaining, CHUNK - gathered))
      if (!chunk) throw new WireError('TruncatedFrame', `stream ends inside frame ${frameNumber}`)
      remaining -= chunk.length
      gathered += chunk.length
      parts.push(decipher.update(chunk))
    } while (remaining > 0 && gathered < GATHER)
    yield parts.length === 1 ? (parts[0] as Uint8Array) : Buffer.concat(parts, gathered)
  }
  const tag = await reader.readExact(LIMITS.tagLength)
  if (!tag) throw new WireError('TruncatedFrame', `stream ends inside the tag of frame ${frameNumber}`)
  decipher.setAuthTag(tag)
  let last: Uint8Array
  try {
    last = decipher.final()
  } catch {
    throw new WireError('FrameAuthFailed', `frame ${frameNumber} (${contentType}) failed authentication`)
  }
  if (last.length > 0) yield last
}
