import { createHash } from 'node:crypto'
import type { CID } from 'multiformats/cid'
import { type BlobCid, parseBlobCid } from './blob-cid.ts'
import { BLOBPACK_HEADER_LENGTH, BLOBPACK_MAGIC, BLOBPACK_VERSION } from './blobpack-writer.ts'
import { ByteReader } from './byte-reader.ts'
import { WireError } from './errors.ts'
import { LIMITS } from './limits.ts'

/**
 * Where the reader puts one blob's data. Calls come in order: `write` for each
 * chunk, then exactly one of `end` (the data matched the CID) or `abort` (it did
 * not, or the pack is malformed, reading failed, or `end` itself threw). A chunk is a view into the
 * input: copy it if you keep it after `write` returns.
 */
export interface BlobSink {
  write(chunk: Uint8Array): Promise<void> | void
  end(): Promise<void> | void
  abort(reason: Error): Promise<void> | void
}

/** An entry whose header has been read, before its data. */
export interface BlobpackEntry {
  cid: CID
  size: number
  /** An earlier entry of this pack had the same CID; the caller may discard this copy (it is verified all the same). */
  duplicate: boolean
}

export interface ReadBlobpackOptions {
  /** Entries declaring a longer blob are refused before any of their data is read (default `LIMITS.defaultMaxBlobSize`). */
  maxBlobSize?: number
  /** Refuse zero-length blobs (the addendum allows this as policy). */
  rejectEmptyBlobs?: boolean
  /** Called once per entry, in order, with the sink that receives its data. */
  onBlob(entry: BlobpackEntry): Promise<BlobSink> | BlobSink
}

export interface BlobpackSummary {
  /** Entries read, duplicates included. */
  entries: number
  /** Distinct CIDs. */
  uniqueBlobs: number
  /** Blob data bytes over all entries, duplicates included (headers excluded). */
  bytes: number
  /** Distinct CIDs in order of first appearance. */
  cids: CID[]
}

/**
 * Parses and verifies a blobpack plaintext (proposal 0014, addendum) as it
 * streams, whatever the chunk boundaries, in memory bounded by the input chunks.
 * Each blob's data is hashed while it is passed to its sink; at the end of the
 * blob the SHA-256 is compared with the declared CID.
 *
 * Rejections, as `WireError` reasons: `BlobpackBadMagic`, `BlobpackBadVersion`,
 * `BlobpackCidTooLong` (CID length > 512, checked before the CID is read),
 * `BlobpackBadCid` (not exactly one CIDv1/raw/SHA-256), `BlobpackBlobTooLarge`
 * (over `maxBlobSize`, checked before the data is read), `BlobpackEmptyBlob`
 * (with `rejectEmptyBlobs`), `BlobpackTruncated` (the plaintext ends inside the header
 * or an entry), `BlobpackCidMismatch`. The sink of the entry being read is
 * aborted before any error is thrown. An empty pack (header only) is valid.
 *
 * Sinks are provisional: the plaintext of a frame is not authenticated until its
 * AEAD tag verifies, which the frame decoder signals after the last chunk. The
 * reader never commits anything; the caller keeps what `end`ed sinks hold as
 * staged and commits it only once the enclosing frame has verified (discarding
 * it otherwise). For the same reason an error here may be the symptom of a
 * tampered frame rather than a sender bug.
 */
export async function readBlobpack(
  plaintext: AsyncIterable<Uint8Array>,
  opts: ReadBlobpackOptions,
): Promise<BlobpackSummary> {
  const maxBlobSize = opts.maxBlobSize ?? LIMITS.defaultMaxBlobSize
  if (!Number.isSafeInteger(maxBlobSize) || maxBlobSize < 0) {
    throw new RangeError(`invalid maxBlobSize ${maxBlobSize}`)
  }
  const reader = new ByteReader(plaintext)
  try {
    await readHeader(reader)
    const seen = new Set<string>()
    const summary: BlobpackSummary = { entries: 0, uniqueBlobs: 0, bytes: 0, cids: [] }
    while (!(await reader.atEnd())) {
      const { cid, size } = await readEntryHeader(reader, summary.entries, maxBlobSize, opts.rejectEmptyBlobs)
      const key = cid.toString()
      const duplicate = seen.has(key)
      const sink = await opts.onBlob({ cid, size, duplicate })
      await readBlobData(reader, cid, size, sink)
      summary.entries++
      summary.bytes += size
      if (!duplicate) {
        seen.add(key)
        summary.cids.push(cid)
        summary.uniqueBlobs++
      }
    }
    return summary
  } finally {
    // Like `for await`: stop the source (e.g. the frame's decryption) when done or failed.
    await reader.cancel()
  }
}

async function readHeader(reader: ByteReader): Promise<void> {
  const header = await reader.readExact(BLOBPACK_HEADER_LENGTH)
  if (!header) throw new WireError('BlobpackTruncated', 'plaintext ends inside the blobpack header')
  const view = new DataView(header.buffer, header.byteOffset, BLOBPACK_HEADER_LENGTH)
  const magic = view.getUint32(0)
  if (magic !== BLOBPACK_MAGIC) {
    throw new WireError('BlobpackBadMagic', `magic 0x${magic.toString(16).padStart(8, '0')} is not "ATPB"`)
  }
  const version = view.getUint8(4)
  if (version !== BLOBPACK_VERSION) throw new WireError('BlobpackBadVersion', `unknown version ${version}`)
}

async function readEntryHeader(
  reader: ByteReader,
  index: number,
  maxBlobSize: number,
  rejectEmpty: boolean | undefined,
): Promise<{ cid: BlobCid; size: number }> {
  const truncated = () =>
    new WireError('BlobpackTruncated', `plaintext ends inside the header of entry ${index}`)
  const cidLengthBytes = await reader.readExact(4)
  if (!cidLengthBytes) throw truncated()
  const cidLength = new DataView(cidLengthBytes.buffer, cidLengthBytes.byteOffset, 4).getUint32(0)
  if (cidLength > LIMITS.maxBlobpackCidLength) {
    throw new WireError('BlobpackCidTooLong', `entry ${index}: CID length ${cidLength} exceeds 512`)
  }
  const cidBytes = await reader.readExact(cidLength)
  if (!cidBytes) throw truncated()
  const cid = parseBlobCid(cidBytes)
  const sizeBytes = await reader.readExact(8)
  if (!sizeBytes) throw truncated()
  const size = new DataView(sizeBytes.buffer, sizeBytes.byteOffset, 8).getBigUint64(0)
  // maxBlobSize is a safe integer, so passing this check also makes `Number(size)` exact.
  if (size > BigInt(maxBlobSize)) {
    throw new WireError(
      'BlobpackBlobTooLarge',
      `blob ${cid}: ${size} bytes exceeds the limit of ${maxBlobSize}`,
    )
  }
  if (size === 0n && rejectEmpty) {
    throw new WireError('BlobpackEmptyBlob', `blob ${cid}: zero-length blobs are refused`)
  }
  return { cid, size: Number(size) }
}

async function readBlobData(reader: ByteReader, cid: BlobCid, size: number, sink: BlobSink): Promise<void> {
  try {
    const hash = createHash('sha256')
    for (let remaining = size; remaining > 0; ) {
      const chunk = await reader.readUpTo(remaining)
      if (!chunk) throw new WireError('BlobpackTruncated', `plaintext ends inside the data of blob ${cid}`)
      remaining -= chunk.length
      hash.update(chunk)
      await sink.write(chunk)
    }
    if (!hash.digest().equals(cid.multihash.digest)) {
      throw new WireError('BlobpackCidMismatch', `data of blob ${cid} does not hash to its CID`)
    }
    await sink.end()
  } catch (err) {
    const reason = err instanceof Error ? err : new Error(String(err))
    try {
      await sink.abort(reason)
    } catch {
      // The original failure is what the caller needs to see.
    }
    throw err
  }
}
