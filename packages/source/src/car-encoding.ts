import { encode } from '@atproto/lex-cbor'
import type { Cid } from '@atproto/lex-data'

/**
 * CAR v1 framing for `AccountSource` implementations that stream a repo from their own block
 * table: `RepoSnapshot.carLength` must be known before the first byte, so the framing is
 * computed per block rather than by a writer that buffers.
 */

/** The CAR header: varint length, then DAG-CBOR `{ roots: [root], version: 1 }`. */
export function carHeader(root: Cid): Uint8Array {
  const body = encode({ roots: [root], version: 1 })
  return concat(varint(body.length), body)
}

/** What precedes a block's bytes: varint(cid + bytes length), then the CID. */
export function carBlockPrefix(cid: Uint8Array, byteLength: number): Uint8Array {
  return concat(varint(cid.length + byteLength), cid)
}

/** Bytes one block takes in the CAR, framing included. */
export function carBlockLength(cidLength: number, byteLength: number): number {
  return varint(cidLength + byteLength).length + cidLength + byteLength
}

function varint(n: number): Uint8Array {
  const out: number[] = []
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80)
    n = Math.floor(n / 128)
  }
  out.push(n)
  return Uint8Array.from(out)
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}
