import { hash } from 'node:crypto'
import { type BytesReader, readHeader } from '@ipld/car/decoder'
import { TransferError } from '@pds-transfer/core'
import { CID } from 'multiformats/cid'
import type { VerifiedBlock } from './account-sink.ts'

/**
 * CIDs a CAR may carry (DASL CAR: "a CAR stream must only feature DASL CIDs"): version 1,
 * dag-cbor (0x71) or raw (0x55), sha2-256 (0x12), 32-byte digest; always 36 bytes.
 */
const DASL_CID_PREFIXES = [
  [0x01, 0x71, 0x12, 0x20],
  [0x01, 0x55, 0x12, 0x20],
] as const
const CID_PREFIX_LENGTH = 4
const CID_LENGTH = 36
/** @ipld/car reads a section's length varint from at most 8 bytes; so do we. */
const MAX_VARINT_BYTES = 8

/** A repo CAR that is malformed or carries a block whose bytes do not hash to its CID. */
export class InvalidRepoError extends Error {
  override readonly name = 'InvalidRepoError'
}

/**
 * Streams a CAR's blocks, each checked against its CID, in batches sized for the sink.
 *
 * The header is read by `@ipld/car`'s own decoder, CAR v1 only (the repository spec's export
 * format). The first root is the commit; further roots have no defined meaning and are
 * ignored ("additional CIDs may also be present"). Blocks of either DASL codec are passed on:
 * what the repo does not reach is for the verifier to ignore, not to refuse.
 *
 * The block sections are split here, synchronously over whatever bytes have arrived, instead of by
 * `CarBlockIterator`: its reader awaits several promises and builds a `CID` object per block,
 * which at 200k records was a third of the import's CPU and most of its garbage. A block's
 * `cid` and `bytes` are views into the received chunk; batches are kept small so those chunks
 * are released soon after the sink has copied them.
 */
export async function* verifiedCarBatches(
  bytes: AsyncIterable<Uint8Array>,
  options: { onRoot: (root: CID) => void; batchBytes?: number },
): AsyncGenerator<VerifiedBlock[]> {
  const reader = new ChunkedReader(bytes)
  let roots: CID[]
  try {
    roots = (await readHeader(reader, 1)).roots
  } catch (err) {
    if (err instanceof TransferError) throw err
    throw new InvalidRepoError(`repo CAR header: ${(err as Error).message}`, { cause: err })
  }
  const root = roots[0]
  if (!root) throw new InvalidRepoError('repo CAR header has no root (the first root must be the commit)')
  options.onRoot(root)

  const limit = options.batchBytes ?? 64 * 1024
  let batch: VerifiedBlock[] = []
  let size = 0
  while (await reader.available(1)) {
    // Like @ipld/car: the length varint is read from the next (at most) 8 bytes.
    await reader.available(MAX_VARINT_BYTES)
    const { value: length, bytes: varintBytes } = reader.varint(MAX_VARINT_BYTES)
    if (length === 0) throw new InvalidRepoError('repo CAR: Invalid CAR section (zero length)')
    if (!(await reader.available(length))) throw new InvalidRepoError('repo CAR: Unexpected end of data')
    const section = reader.take(length)
    const cid = section.subarray(0, CID_LENGTH)
    if (section.length < CID_LENGTH || !DASL_CID_PREFIXES.some((p) => p.every((b, i) => cid[i] === b))) {
      throw new InvalidRepoError(
        `block ${describeCid(section)} is not a DASL CID (CIDv1, dag-cbor or raw, sha2-256)`,
      )
    }
    const data = section.subarray(CID_LENGTH)
    if (!hash('sha256', data, 'buffer').equals(cid.subarray(CID_PREFIX_LENGTH))) {
      throw new InvalidRepoError(`block ${CID.decode(cid)} does not match its bytes`)
    }
    batch.push({ cid, bytes: data })
    size += varintBytes + length
    if (size >= limit) {
      yield batch
      batch = []
      size = 0
    }
  }
  if (batch.length > 0) yield batch
}

/** A CID for an error message, whatever the bytes hold. */
function describeCid(section: Uint8Array): string {
  try {
    return CID.decodeFirst(section)[0].toString()
  } catch {
    return `with CID bytes 0x${Buffer.from(section.subarray(0, 8)).toString('hex')}…`
  }
}

/**
 * Buffers a chunk stream for the CAR reader: `@ipld/car`'s async `BytesReader` for the header,
 * and synchronous access once `available(n)` has said `n` bytes are there. Only a section that
 * straddles two chunks is copied.
 */
class ChunkedReader implements BytesReader {
  private readonly iterator: AsyncIterator<Uint8Array>
  private buffer: Uint8Array = new Uint8Array(0)
  private offset = 0
  private done = false
  /** Bytes consumed since the start of the stream. */
  pos = 0

  constructor(source: AsyncIterable<Uint8Array>) {
    this.iterator = source[Symbol.asyncIterator]()
  }

  /** True once at least `n` bytes are buffered; false if the stream ends first. */
  async available(n: number): Promise<boolean> {
    let have = this.buffer.length - this.offset
    if (have >= n) return true
    // Gather whole chunks first and join once: a large block arriving in many small chunks is
    // copied once, not once per chunk.
    const parts = have > 0 ? [this.buffer.subarray(this.offset)] : []
    while (have < n && !this.done) {
      const next = await this.iterator.next()
      if (next.done) {
        this.done = true
        break
      }
      if (next.value.length === 0) continue
      parts.push(next.value)
      have += next.value.length
    }
    this.buffer = parts.length === 1 ? (parts[0] as Uint8Array) : Buffer.concat(parts)
    this.offset = 0
    return have >= n
  }

  /** The next `n` buffered bytes (the caller made sure they are there). */
  take(n: number): Uint8Array {
    const out = this.buffer.subarray(this.offset, this.offset + n)
    this.offset += n
    this.pos += n
    return out
  }

  /** Decodes an unsigned LEB128 varint from the next buffered bytes (at most `max`) and consumes it. */
  varint(max: number): { value: number; bytes: number } {
    let value = 0
    const stop = Math.min(max, this.buffer.length - this.offset)
    for (let i = 0; i < stop; i++) {
      const byte = this.buffer[this.offset + i] as number
      value += (byte & 0x7f) * 2 ** (7 * i)
      if (byte < 0x80) {
        this.offset += i + 1
        this.pos += i + 1
        return { value, bytes: i + 1 }
      }
    }
    throw new InvalidRepoError(
      stop === 0 ? 'repo CAR: Unexpected end of data' : 'repo CAR: section length is not a valid varint',
    )
  }

  // BytesReader, for @ipld/car's readHeader.
  async upTo(length: number): Promise<Uint8Array> {
    await this.available(length)
    return this.buffer.subarray(this.offset, this.offset + Math.min(length, this.buffer.length - this.offset))
  }

  async exactly(length: number, seek = false): Promise<Uint8Array> {
    if (!(await this.available(length))) throw new Error('Unexpected end of data')
    const out = this.buffer.subarray(this.offset, this.offset + length)
    if (seek) this.seek(length)
    return out
  }

  seek(length: number): void {
    this.offset += length
    this.pos += length
  }
}
