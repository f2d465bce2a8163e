/**
 * Blobs an earlier attempt of the same run stored before it died (a worker killed mid-job), kept
 * without being fetched or stored again. Two ways: the entries that attempt recorded
 * (`reusableBlobs`: the store must still hold each object byte for byte as recorded), and the
 * objects it stored but could not record before it died (`adoptStoredBlobs`: each must open with
 * the archive's key and hash to its CID, so only a holder of the full key adopts). Invariant: a
 * blob is kept only under the key the archive gives it and only when the run wants it; anything
 * else is fetched again as if never stored.
 */
import { createHash } from 'node:crypto'
import { AccountArchive, type BlobEntry, OBJECT_TYPE } from '@pds-transfer/archive'
import { CID } from 'multiformats/cid'

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

/**
 * The blobs of `cids` already in the store though no manifest or record names them, each checked
 * by opening it (every frame's tag, the end frame's size and SHA-256) and hashing its plaintext
 * against its CID. With a writer key (no decryption) nothing is adopted.
 */
export async function adoptStoredBlobs(
  archive: AccountArchive,
  cids: readonly string[],
): Promise<BlobEntry[]> {
  const adopted: BlobEntry[] = []
  for (const cid of cids) {
    const key = AccountArchive.blobKey(archive.did, cid)
    if (!(await archive.store.has(key))) continue
    try {
      const stored = await archive.store.get(key)
      if (!stored) continue
      const outer = createHash('sha256')
      let size = 0
      for await (const chunk of stored) {
        outer.update(chunk)
        size += chunk.length
      }
      const ref = { key, size, sha256: outer.digest('hex'), plainSize: 0 }
      const inner = createHash('sha256')
      for await (const chunk of archive.read(ref, OBJECT_TYPE.blob)) {
        inner.update(chunk)
        ref.plainSize += chunk.length
      }
      const multihash = CID.parse(cid).multihash
      if (multihash.code === 0x12 && Buffer.from(multihash.digest).equals(inner.digest()))
        adopted.push({ cid, object: ref })
    } catch {
      // Not openable with this key, or not whole: fetched and stored again.
    }
  }
  return adopted
}
