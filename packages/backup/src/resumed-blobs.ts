/**
 * Blobs an earlier attempt of the same run stored before it died (a worker killed mid-job): each
 * is kept without being fetched or stored again when the store still holds its object byte for
 * byte as that attempt recorded it. Invariant: an entry is reused only for a blob the run wants,
 * under the key the archive gives that blob, with the recorded size and SHA-256; anything else
 * is fetched again as if never stored.
 */
import { createHash } from 'node:crypto'
import { AccountArchive, type BlobEntry } from '@pds-transfer/archive'

export async function reusableBlobs(
  archive: AccountArchive,
  entries: readonly BlobEntry[],
  wanted: ReadonlySet<string>,
): Promise<BlobEntry[]> {
  const reused: BlobEntry[] = []
  for (const entry of entries) {
    if (!wanted.has(entry.cid) || entry.object.key !== AccountArchive.blobKey(archive.did, entry.cid))
      continue
    if (await storedAsRecorded(archive, entry)) reused.push(entry)
  }
  return reused
}

async function storedAsRecorded(archive: AccountArchive, entry: BlobEntry): Promise<boolean> {
  const stored = await archive.store.get(entry.object.key)
  if (!stored) return false
  const digest = createHash('sha256')
  let size = 0
  for await (const chunk of stored) {
    digest.update(chunk)
    size += chunk.length
  }
  return size === entry.object.size && digest.digest('hex') === entry.object.sha256
}
