import type { CID } from 'multiformats/cid'
import { isBlobCid } from './blob-cid.ts'
import { WireError } from './errors.ts'

/** "ATPB": the first four bytes of every blobpack. */
export const BLOBPACK_MAGIC = 0x41545042
/** The only blobpack wire format version defined. */
export const BLOBPACK_VERSION = 1
/** Magic (4 bytes) plus version (1 byte). */
export const BLOBPACK_HEADER_LENGTH = 5

/** Bytes an entry adds besides its blob data: CID length (uint32), the CID, blob length (uint64). */
export function blobpackEntryOverhead(cidByteLength: number): number {
  return 4 + cidByteLength + 8
}

/** What the size of a blobpack depends on. */
export interface BlobpackEntryInfo {
  cid: CID
  /** Blob length in bytes. */
  size: number
}

/** One blob to pack: its CID, its exact length, and a way to stream its bytes. */
export interface BlobpackSourceEntry extends BlobpackEntryInfo {
  /** Opened only when the entry is written, so at most one blob is open at a time. */
  open(): AsyncIterable<Uint8Array> | Promise<AsyncIterable<Uint8Array>>
}

/**
 * Exact byte length of the blobpack `encodeBlobpack` produces for these entries,
 * so that a frame header can state its length before the data is streamed.
 */
export function blobpackLength(entries: Iterable<BlobpackEntryInfo>): number {
  let total = BLOBPACK_HEADER_LENGTH
  for (const { cid, size } of entries) {
    checkSize(size)
    total += blobpackEntryOverhead(cid.bytes.length) + size
  }
  if (!Number.isSafeInteger(total)) throw new RangeError(`blobpack length ${total} is not a safe integer`)
  return total
}

/**
 * Streams a blobpack (proposal 0014, addendum): the header, then per entry its
 * CID, length and data, passing each blob's chunks through as they come (no
 * copy, no buffering of whole blobs).
 *
 * Throws `WireError('BlobpackBadCid')` for a CID that is not CIDv1/raw/SHA-256
 * and `WireError('LengthMismatch')` if a blob's stream yields more or fewer bytes
 * than its `size`: a sender must never emit a malformed pack. Blob data is not
 * hashed here; the receiver verifies every CID.
 */
export async function* encodeBlobpack(
  entries: AsyncIterable<BlobpackSourceEntry> | Iterable<BlobpackSourceEntry>,
): AsyncGenerator<Uint8Array> {
  const header = new Uint8Array(BLOBPACK_HEADER_LENGTH)
  const view = new DataView(header.buffer)
  view.setUint32(0, BLOBPACK_MAGIC)
  view.setUint8(4, BLOBPACK_VERSION)
  yield header
  for await (const entry of entries) {
    const { cid, size } = entry
    if (!isBlobCid(cid)) throw new WireError('BlobpackBadCid', `${cid} is not a CIDv1/raw/sha2-256 blob CID`)
    checkSize(size)
    const stream = await entry.open()
    yield entryHeader(cid.bytes, size)
    let sent = 0
    for await (const chunk of stream) {
      sent += chunk.length
      if (sent > size) throw new WireError('LengthMismatch', `blob ${cid} yields more than its ${size} bytes`)
      if (chunk.length > 0) yield chunk
    }
    if (sent !== size) throw new WireError('LengthMismatch', `blob ${cid} yields ${sent} bytes, not ${size}`)
  }
}

function entryHeader(cidBytes: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(blobpackEntryOverhead(cidBytes.length))
  const view = new DataView(out.buffer)
  view.setUint32(0, cidBytes.length)
  out.set(cidBytes, 4)
  view.setBigUint64(4 + cidBytes.length, BigInt(size))
  return out
}

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`invalid blob size ${size}`)
}
