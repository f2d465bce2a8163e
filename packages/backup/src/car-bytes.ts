import { encode } from '@atproto/lex-cbor'
import { decodeCid } from '@atproto/lex-data'
import { varint } from 'multiformats'

type Block = { cid: Uint8Array; bytes: Uint8Array }

/** A CAR v1 (one root) of `blocks`, as chunks: the archive's repo objects and exports. */
export async function* carBytes(
  root: Uint8Array,
  blocks: AsyncIterable<Block[]> | Iterable<Block[]>,
): AsyncGenerator<Uint8Array> {
  yield carHeader(root)
  for await (const batch of blocks) yield carSections(batch)
}

/** The CAR v1 header naming `root`, with its length prefix. */
export function carHeader(root: Uint8Array): Uint8Array {
  const header = encode({ version: 1, roots: [decodeCid(root)] })
  return Buffer.concat([lengthPrefix(header.length), header])
}

/** The sections (length, CID, bytes) of `blocks`. */
export function carSections(blocks: Block[]): Uint8Array {
  const parts: Uint8Array[] = []
  for (const block of blocks)
    parts.push(lengthPrefix(block.cid.length + block.bytes.length), block.cid, block.bytes)
  return Buffer.concat(parts)
}

function lengthPrefix(n: number): Uint8Array {
  const out = new Uint8Array(varint.encodingLength(n))
  varint.encodeTo(n, out, 0)
  return out
}
