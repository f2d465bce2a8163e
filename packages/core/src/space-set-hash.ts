import { createHash } from 'node:crypto'
import { createBLAKE3 } from 'hash-wasm'

/** Bytes of the LtHash state: 1024 little-endian uint16 lanes (proposal 0016, "Commit digest"). */
export const SET_HASH_STATE_BYTES = 2048
const LANES = SET_HASH_STATE_BYTES / 2

/**
 * The set hash of a permissioned repo (0016's LtHash): each element is expanded to 2048 bytes
 * with BLAKE3 in XOF mode and added lane-wise modulo 2^16 (removed by subtracting), so the
 * state depends only on the multiset of elements, never on the order of writes.
 */
export class SpaceSetHash {
  private readonly lanes = new Uint16Array(LANES)

  /** A hash resumed from a stored 2048-byte state (empty when omitted). */
  constructor(state?: Uint8Array) {
    if (state === undefined) return
    if (state.length !== SET_HASH_STATE_BYTES)
      throw new RangeError(`set hash state must be ${SET_HASH_STATE_BYTES} bytes, got ${state.length}`)
    // Read lane by lane as little-endian, whatever the platform's byte order.
    const view = new DataView(state.buffer, state.byteOffset, state.byteLength)
    for (let i = 0; i < LANES; i++) this.lanes[i] = view.getUint16(i * 2, true)
  }

  /** Adds one element (for a record, {@link setHashElement}). */
  add(element: string): this {
    const lanes = expand(element)
    // Uint16Array stores modulo 2^16: the wraparound 0016 asks for.
    for (let i = 0; i < LANES; i++) this.lanes[i] = (this.lanes[i] as number) + (lanes[i] as number)
    return this
  }

  /** Removes one element added before. */
  remove(element: string): this {
    const lanes = expand(element)
    for (let i = 0; i < LANES; i++) this.lanes[i] = (this.lanes[i] as number) - (lanes[i] as number)
    return this
  }

  /** The 2048-byte state (a copy), lanes little-endian: what a repo host stores. */
  state(): Uint8Array {
    const out = new Uint8Array(SET_HASH_STATE_BYTES)
    const view = new DataView(out.buffer)
    for (let i = 0; i < LANES; i++) view.setUint16(i * 2, this.lanes[i] as number, true)
    return out
  }

  /** `sha256(state)`: the 32-byte `hash` a signed commit carries. */
  digest(): Uint8Array {
    return new Uint8Array(createHash('sha256').update(this.state()).digest())
  }
}

/** The element a record contributes: `{collection}/{rkey}/{cid}` (CID in its string form). */
export function setHashElement(collection: string, rkey: string, cid: string): string {
  return `${collection}/${rkey}/${cid}`
}

// BLAKE3 in WebAssembly (hash-wasm): about 14 µs per 2048-byte XOF output where the pure-JS
// @noble/hashes took about 190 µs, the whole cost of folding an index. One instance, reused: each
// expansion runs init, update and digest synchronously.
const blake3Xof = await createBLAKE3(SET_HASH_STATE_BYTES * 8)

function expand(element: string): Uint16Array {
  blake3Xof.init()
  blake3Xof.update(new TextEncoder().encode(element))
  const bytes = blake3Xof.digest('binary')
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const lanes = new Uint16Array(LANES)
  for (let i = 0; i < LANES; i++) lanes[i] = view.getUint16(i * 2, true)
  return lanes
}
