/**
 * One blob from a source's `com.atproto.sync.getBlob`, into the sink. Invariant: the upload is
 * committed only after every byte streamed through SHA-256 and the digest equals the CID's (and
 * the size is within the limit); on any failure it is aborted, so nothing half-written stays.
 * The blob is never held whole in memory.
 */
import { createHash } from 'node:crypto'
import { isBlobCid } from '@pds-transfer/core'
import { CID } from 'multiformats/cid'
import type { AccountSink, BlobUpload } from './account-sink.ts'
import type { SourceClient } from './source-client.ts'
import { SourceError } from './source-client.ts'
import { fetchStreaming, TransientSourceError } from './sync-retry.ts'

/** What became of one blob: stored here, or why it could not be had. */
export type BlobFetchOutcome = { stored: number } | { missing: string }

/**
 * Fetches `cid` of `did` and stores it. Returns `{ stored: bytes }`, or `{ missing: why }` when
 * the source has no such blob, the CID is not a blob CID, or it is over `maxBlobSize`. Throws
 * `TransientSourceError` for what another attempt may fix (a cut, a stall, a 5xx or 429, bytes
 * that do not hash to the CID) and `SourceError` for any other refusal.
 */
export async function fetchBlob(params: {
  client: SourceClient
  sink: Pick<AccountSink, 'startBlob'>
  did: string
  cid: string
  maxBlobSize: number
  stallTimeoutMs: number
  /** Another method serving the blob by CID (0016's `com.atproto.space.getBlob`); default `com.atproto.sync.getBlob`. */
  path?: string
}): Promise<BlobFetchOutcome> {
  const { client, sink, did, cid, maxBlobSize } = params
  let parsed: CID
  try {
    parsed = CID.parse(cid)
  } catch {
    return { missing: 'not a CID' }
  }
  if (!isBlobCid(parsed)) return { missing: 'not a blob CID (CIDv1, raw, sha2-256)' }
  const path =
    params.path ??
    `/xrpc/com.atproto.sync.getBlob?did=${encodeURIComponent(did)}&cid=${encodeURIComponent(cid)}`
  try {
    return await fetchStreaming(
      (signal) => client.fetch(path, { signal }),
      `getBlob ${cid}`,
      params.stallTimeoutMs,
      async (res, body) => {
        const declared = Number(res.headers.get('content-length') ?? Number.NaN)
        if (declared > maxBlobSize)
          return { missing: `${declared} bytes, over the ${maxBlobSize}-byte limit` }
        const upload: BlobUpload = await sink.startBlob(did, cid, Number.isFinite(declared) ? declared : -1)
        try {
          const hash = createHash('sha256')
          let size = 0
          for await (const chunk of body) {
            size += chunk.length
            if (size > maxBlobSize) throw new BlobTooLarge(size)
            hash.update(chunk)
            await upload.write(chunk)
          }
          if (!hash.digest().equals(parsed.multihash.digest)) {
            throw new TransientSourceError(
              `getBlob ${cid}: the bytes received do not hash to the CID`,
              'mismatch',
            )
          }
          await upload.commit()
          return { stored: size }
        } catch (err) {
          await upload.abort().catch(() => {})
          throw err
        }
      },
    )
  } catch (err) {
    if (err instanceof BlobTooLarge) return { missing: `over the ${maxBlobSize}-byte limit` }
    // The reference PDS answers an unknown blob 400 `BlobNotFound` or `InvalidRequest` "Blob not found".
    if (
      err instanceof SourceError &&
      (err.status === 404 || /BlobNotFound|blob not found/i.test(err.message))
    ) {
      return { missing: 'the source has no such blob' }
    }
    throw err
  }
}

/** A body longer than the limit (without a declared length to refuse it up front). */
class BlobTooLarge extends Error {
  constructor(size: number) {
    super(`blob of more than ${size} bytes`)
  }
}
