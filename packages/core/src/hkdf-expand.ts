import { createHmac } from 'node:crypto'

/**
 * HKDF-Expand of RFC 5869 (section 2.3) with HMAC-SHA256.
 *
 * node:crypto's `hkdf` always runs Extract first, which would derive different
 * frame keys than the proposal: its `transfer_secret` is already a PRK and goes
 * to Expand directly.
 */
export function hkdfExpandSha256(prk: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  const hashLength = 32
  if (prk.length < hashLength) throw new RangeError('HKDF-Expand: PRK shorter than the hash length')
  if (!Number.isInteger(length) || length < 0 || length > 255 * hashLength) {
    throw new RangeError(`HKDF-Expand: invalid output length ${length}`)
  }
  const out = new Uint8Array(length)
  let previous: Uint8Array = new Uint8Array(0)
  for (let offset = 0, counter = 1; offset < length; counter++) {
    previous = createHmac('sha256', prk).update(previous).update(info).update(Uint8Array.of(counter)).digest()
    out.set(previous.subarray(0, Math.min(hashLength, length - offset)), offset)
    offset += hashLength
  }
  return out
}
