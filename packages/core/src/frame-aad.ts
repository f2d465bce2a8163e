/** The HPKE `info` and the protocol label that starts the exporter context and every AAD. */
export const TRANSFER_INFO = 'atproto-transfer-v1'

const utf8 = new TextEncoder()

function uint32be(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff_ffff) throw new RangeError(`not a uint32: ${n}`)
  const b = new Uint8Array(4)
  new DataView(b.buffer).setUint32(0, n)
  return b
}

/** Joins UTF-8 strings and raw parts with single 0x00 separators, as the proposal writes `concat(..., 0x00, ...)`. */
function joinWithZero(parts: (string | Uint8Array)[]): Uint8Array {
  const bytes = parts.map((p) => (typeof p === 'string' ? utf8.encode(p) : p))
  const out = new Uint8Array(bytes.reduce((n, b) => n + b.length, 0) + bytes.length - 1)
  let offset = 0
  bytes.forEach((b, i) => {
    if (i > 0) out[offset++] = 0
    out.set(b, offset)
    offset += b.length
  })
  return out
}

/** `exporter_context` of section 2.4 step 3. */
export function exporterContext(did: string, transferId: string): Uint8Array {
  return joinWithZero([TRANSFER_INFO, did, transferId])
}

/** HKDF-Expand `info` for a frame's key (`label` "atproto-frame-key") or nonce ("atproto-frame-nonce"). */
export function frameKeyInfo(
  label: 'atproto-frame-key' | 'atproto-frame-nonce',
  frameNumber: number,
): Uint8Array {
  return joinWithZero([label, uint32be(frameNumber)])
}

/** The AAD of section 2.4 step 5: binds protocol, account, session, position and type of each frame. */
export function frameAad(
  did: string,
  transferId: string,
  frameNumber: number,
  contentType: string,
): Uint8Array {
  return joinWithZero([TRANSFER_INFO, did, transferId, uint32be(frameNumber), contentType])
}
