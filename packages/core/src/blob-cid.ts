import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import * as Digest from 'multiformats/hashes/digest'
import { sha256 } from 'multiformats/hashes/sha2'
import { WireError } from './errors.ts'

/** A blob's CID as atproto uses them: version 1, raw codec, SHA-256 multihash. */
export type BlobCid = CID<unknown, typeof raw.code, typeof sha256.code, 1>

/** Byte length of a binary blob CID: version, codec, hash code, digest length (one byte each), digest. */
export const BLOB_CID_LENGTH = 36
const SHA256_LENGTH = 32
/** The only canonical encoding of the four varints before the digest. */
const BLOB_CID_PREFIX = [1, raw.code, sha256.code, SHA256_LENGTH] as const

/** The CID of a blob's bytes (CIDv1, raw, SHA-256). */
export function blobCid(bytes: Uint8Array): BlobCid {
  return blobCidFromDigest(createHash('sha256').update(bytes).digest())
}

/** The blob CID of a 32-byte SHA-256 digest, e.g. one computed incrementally. */
export function blobCidFromDigest(digest: Uint8Array): BlobCid {
  if (digest.length !== SHA256_LENGTH)
    throw new RangeError(`SHA-256 digest must be 32 bytes, got ${digest.length}`)
  // Copy: the CID must not keep a caller's (possibly much larger) buffer alive.
  return CID.createV1(raw.code, Digest.create(sha256.code, Uint8Array.from(digest)))
}

/** True if `cid` is a CIDv1 with the raw codec and a 32-byte SHA-256 multihash. */
export function isBlobCid(cid: CID): cid is BlobCid {
  return (
    cid.version === 1 &&
    cid.code === raw.code &&
    cid.multihash.code === sha256.code &&
    cid.multihash.size === SHA256_LENGTH &&
    cid.multihash.digest.length === SHA256_LENGTH
  )
}

/**
 * Decodes binary CID bytes that must be exactly one canonical CIDv1/raw/SHA-256
 * (36 bytes, nothing before or after). Anything else, including non-minimal
 * varints, throws `WireError('BlobpackBadCid')`. The result does not share
 * memory with `bytes`.
 */
export function parseBlobCid(bytes: Uint8Array): BlobCid {
  if (bytes.length !== BLOB_CID_LENGTH || BLOB_CID_PREFIX.some((b, i) => bytes[i] !== b)) {
    throw new WireError('BlobpackBadCid', `not a CIDv1/raw/sha2-256 CID: ${describe(bytes)}`)
  }
  return CID.decode(Uint8Array.from(bytes)) as BlobCid
}

function describe(bytes: Uint8Array): string {
  const head = Buffer.from(bytes.subarray(0, 4)).toString('hex')
  return `${bytes.length} bytes starting ${head || '(empty)'}, expected 36 bytes starting 01551220`
}
