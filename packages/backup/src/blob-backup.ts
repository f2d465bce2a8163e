/**
 * The blob step of a backup run: each blob the repo references and the archive lacks, fetched
 * with `getBlob` through the destination's `fetchBlob` (every byte hashed against the CID, the
 * upload kept only when it matches) into a sealed archive object. Invariant: an object is put
 * only for a blob whose bytes matched; a failed or refused blob leaves no object.
 */
import { once } from 'node:events'
import { PassThrough } from 'node:stream'
import type { AccountArchive, BlobEntry, MissingBlob } from '@pds-transfer/archive'
import {
  type BlobUpload,
  DEFAULT_LIMITS,
  fetchBlob,
  forEachBounded,
  type SourceClient,
  withRetries,
} from '@pds-transfer/destination'

/** Blobs fetched at once; the reference PDS serves about 4 in parallel at full speed. */
export const BLOB_CONCURRENCY = 4

export interface BlobBackup {
  stored: BlobEntry[]
  missing: MissingBlob[]
  fetchedBytes: number
}

/** Fetches and stores `cids`; `onBlob` is told after each one (for progress). */
export async function backupBlobs(params: {
  archive: AccountArchive
  client: SourceClient
  did: string
  cids: string[]
  onBlob?: (done: number, total: number, bytes: number) => void
  /** Told of each blob once its object is stored. */
  onStored?: (entry: BlobEntry) => void
}): Promise<BlobBackup> {
  const { archive, client, did, cids } = params
  const out: BlobBackup = { stored: [], missing: [], fetchedBytes: 0 }
  let done = 0
  await forEachBounded(cids, BLOB_CONCURRENCY, async (cid) => {
    let entry: BlobEntry | undefined
    const sink = {
      startBlob: async (): Promise<BlobUpload> => {
        const upload = archiveUpload(archive, cid)
        upload.stored.then(
          (object) => (entry = { cid, object }),
          () => {},
        )
        return upload
      },
    }
    const outcome = await withRetries(DEFAULT_LIMITS.retry, () =>
      fetchBlob({
        client,
        sink,
        did,
        cid,
        maxBlobSize: DEFAULT_LIMITS.maxBlobSize,
        stallTimeoutMs: DEFAULT_LIMITS.stallTimeoutMs,
      }),
    )
    if ('missing' in outcome) out.missing.push({ cid, reason: outcome.missing })
    else if (entry) {
      out.stored.push(entry)
      out.fetchedBytes += outcome.stored
      params.onStored?.(entry)
    }
    params.onBlob?.(++done, cids.length, out.fetchedBytes)
  })
  return out
}

/** A `BlobUpload` whose bytes stream into `archive.writeBlob`; `commit` resolves once it is stored. */
function archiveUpload(
  archive: AccountArchive,
  cid: string,
): BlobUpload & { stored: Promise<BlobEntry['object']> } {
  const pipe = new PassThrough({ highWaterMark: 1 << 20 })
  const stored = archive.writeBlob(cid, pipe)
  // A put that fails (a full disk) must fail the write under way, not leave it waiting.
  const failed = stored.then(
    () => new Promise<never>(() => {}),
    (err: unknown) => Promise.reject(err),
  )
  failed.catch(() => {})
  return {
    stored,
    async write(chunk) {
      if (!pipe.write(chunk)) await Promise.race([once(pipe, 'drain'), failed])
    },
    async commit() {
      pipe.end()
      await stored
    },
    async abort() {
      pipe.destroy(new Error('blob upload aborted'))
      await stored.catch(() => {})
    },
  }
}
