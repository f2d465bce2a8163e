import { WireError } from './errors.ts'
import { LIMITS } from './limits.ts'

const utf8 = new TextEncoder()

/** The cleartext part of a frame (section 2.5). */
export interface FrameHeader {
  frameNumber: number
  contentType: string
  /** AEAD ciphertext length including the 16-byte tag. */
  ciphertextLength: number
}

/** Serializes `frame_number`, `content_type_length`, `content_type`, `ciphertext_length`. */
export function encodeFrameHeader(header: FrameHeader): Uint8Array {
  const type = utf8.encode(header.contentType)
  if (type.length === 0 || type.length > LIMITS.maxContentTypeLength) {
    throw new WireError('ContentTypeTooLong', `content type of ${type.length} bytes`)
  }
  if (header.ciphertextLength < LIMITS.tagLength || header.ciphertextLength > LIMITS.maxCiphertextLength) {
    throw new WireError('FrameTooLarge', `ciphertext length ${header.ciphertextLength} out of range`)
  }
  const out = new Uint8Array(12 + type.length)
  const view = new DataView(out.buffer)
  view.setUint32(0, header.frameNumber)
  view.setUint32(4, type.length)
  out.set(type, 8)
  view.setUint32(8 + type.length, header.ciphertextLength)
  return out
}
