import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  AccountArchive,
  type ArchiveKeys,
  FsArchiveStore,
  generateArchiveKeys,
  writerKeys,
} from '@pds-transfer/archive'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adoptStoredBlobs, reusableBlobs } from '../src/resumed-blobs.ts'

const did = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz'

async function blobCid(bytes: Uint8Array): Promise<string> {
  return CID.create(1, raw.code, await sha256.digest(bytes)).toString()
}

/**
 * Issue 23: what a backup attempt keeps of an earlier, killed attempt of the same run. Only
 * objects that are exactly what the blob's CID names are kept; everything else is fetched again.
 */
describe('blobs a killed attempt stored', () => {
  let dir: string
  let keys: ArchiveKeys
  let archive: AccountArchive
  const bytes = [randomBytes(5000), randomBytes(1200), randomBytes(64)]
  let cids: string[]

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'resumed-blobs-'))
    keys = await generateArchiveKeys()
    archive = new AccountArchive(new FsArchiveStore(dir), keys, did)
    cids = await Promise.all(bytes.map(blobCid))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('reuses a recorded blob only while the store holds it as recorded, and only if wanted', async () => {
    const [a, b] = cids as [string, string]
    const entryA = { cid: a, object: await archive.writeBlob(a, [bytes[0] as Buffer]) }
    const entryB = { cid: b, object: await archive.writeBlob(b, [bytes[1] as Buffer]) }
    expect(await reusableBlobs(archive, [entryA, entryB], new Set([a, b]))).toEqual([entryA, entryB])
    expect(await reusableBlobs(archive, [entryA, entryB], new Set([b]))).toEqual([entryB])
    // A record naming another blob's object is not reused for this one.
    expect(await reusableBlobs(archive, [{ cid: a, object: entryB.object }], new Set([a]))).toEqual([])
    // Changed since it was recorded (sealed again: new bytes at rest).
    await archive.writeBlob(a, [bytes[0] as Buffer])
    expect(await reusableBlobs(archive, [entryA], new Set([a]))).toEqual([])
  })

  it('adopts an unrecorded object that opens and hashes to its CID, nothing else', async () => {
    const [a, , c] = cids as [string, string, string]
    const written = await archive.writeBlob(c, [bytes[2] as Buffer])
    expect(await adoptStoredBlobs(archive, [c])).toEqual([{ cid: c, object: written }])
    // Nothing stored for it.
    expect(await adoptStoredBlobs(archive, [await blobCid(randomBytes(9))])).toEqual([])
    // A writer key cannot open it: fetched again.
    const writer = new AccountArchive(archive.store, writerKeys(keys), did)
    expect(await adoptStoredBlobs(writer, [c])).toEqual([])
    // Another blob's bytes under this blob's key (sealed for that key): refused by the CID.
    await archive.writeBlob(a, [bytes[2] as Buffer])
    expect(await adoptStoredBlobs(archive, [a])).toEqual([])
    // Another archive key: the object does not open.
    const stranger = new AccountArchive(archive.store, await generateArchiveKeys(), did)
    expect(await adoptStoredBlobs(stranger, [c])).toEqual([])
  })
})
