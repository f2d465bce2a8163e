import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import S3rver from 's3rver'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import {
  AccountArchive,
  type ArchiveKeys,
  type ArchiveStore,
  FsArchiveStore,
  generateArchiveKeys,
  S3ArchiveStore,
  writerKeys,
} from '../src/index.ts'

const did = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz'

async function blobCid(bytes: Uint8Array): Promise<string> {
  return CID.create(1, raw.code, await sha256.digest(bytes)).toString()
}

async function* one(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes
}

/** Two runs: the first with a repo, two blobs and preferences, the second with a new head and one blob. */
async function twoRuns(archive: AccountArchive) {
  const blobs = [randomBytes(3000), randomBytes(70_000), randomBytes(10)]
  const cids = await Promise.all(blobs.map(blobCid))
  let state = await archive.load()
  const repo1 = await archive.writeRepo('3l000000000a2', one(Buffer.from('car one')))
  const b0 = await archive.writeBlob(cids[0] as string, one(blobs[0] as Buffer))
  const b1 = await archive.writeBlob(cids[1] as string, one(blobs[1] as Buffer))
  const prefs = await archive.writePreferences(0, [
    { $type: 'app.bsky.actor.defs#adultContentPref', enabled: false },
  ])
  const run = { createdAt: new Date().toISOString(), source: 'http://localhost:1' }
  await archive.appendManifest(state, {
    ...run,
    repo: {
      rev: '3l000000000a2',
      commitCid: 'bafyone',
      records: 1,
      signingKey: 'did:key:z',
      kind: 'full',
      since: null,
      object: repo1,
    },
    blobs: [
      { cid: cids[0] as string, object: b0 },
      { cid: cids[1] as string, object: b1 },
    ],
    blobCount: 2,
    missingBlobs: [],
    preferences: prefs,
    accountState: await archive.writeAccountState(0, { email: 'a@example.com', emailConfirmed: true }),
  })
  state = await archive.load()
  const repo2 = await archive.writeRepo('3l000000000b2', one(Buffer.from('car two')))
  const b2 = await archive.writeBlob(cids[2] as string, one(blobs[2] as Buffer))
  await archive.appendManifest(state, {
    ...run,
    repo: {
      rev: '3l000000000b2',
      commitCid: 'bafytwo',
      records: 2,
      signingKey: 'did:key:z',
      kind: 'diff',
      since: '3l000000000a2',
      object: repo2,
    },
    blobs: [{ cid: cids[2] as string, object: b2 }],
    blobCount: 3,
    missingBlobs: [{ cid: 'bafkmissing', reason: 'the source has no such blob' }],
    preferences: prefs,
    accountState: null,
  })
  return { blobs, cids }
}

async function bytesOf(store: ArchiveStore, key: string): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const chunk of (await store.get(key)) ?? []) parts.push(chunk)
  return Buffer.concat(parts)
}

async function keysOf(store: ArchiveStore): Promise<string[]> {
  const keys: string[] = []
  for await (const key of store.list('')) keys.push(key)
  return keys
}

/** A local S3-compatible server (s3rver) for the S3 store: started once, a bucket per test. */
let s3: { server: S3rver; endpoint: string; dir: string } | undefined
let bucketCount = 0
beforeAll(async () => {
  const dir = await mkdtemp(join(tmpdir(), 's3rver-'))
  const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: dir })
  const { port } = (await server.run()) as { port: number }
  s3 = { server, endpoint: `http://127.0.0.1:${port}`, dir }
})
afterAll(async () => {
  await new Promise((resolve) => s3?.server.close(resolve))
  if (s3) await rm(s3.dir, { recursive: true, force: true })
})

const STORES: [string, (dir: string) => Promise<ArchiveStore>][] = [
  ['filesystem', async (dir) => new FsArchiveStore(dir)],
  [
    'S3 (s3rver)',
    async (dir) => {
      const store = new S3ArchiveStore({
        bucket: `archive-${++bucketCount}`,
        prefix: 'backups/',
        spoolDir: dir,
        client: {
          endpoint: s3?.endpoint,
          region: 'us-east-1',
          credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
        },
      })
      const { CreateBucketCommand } = await import('@aws-sdk/client-s3')
      await store.client.send(new CreateBucketCommand({ Bucket: `archive-${bucketCount}` }))
      return store
    },
  ],
]

describe.each(STORES)('account archive on %s: signed manifests over sealed objects', (_name, makeStore) => {
  let dir: string
  let keys: ArchiveKeys
  let store: ArchiveStore
  let archive: AccountArchive
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'archive-'))
    keys = await generateArchiveKeys()
    store = await makeStore(dir)
    archive = new AccountArchive(store, keys, did)
  })
  afterEach(() => rm(dir, { recursive: true, force: true }))

  it('reads back what two runs stored, and verifies at rest and deep', async () => {
    const { blobs, cids } = await twoRuns(archive)
    const state = await archive.load()
    expect(state.manifests.map((m) => m.seq)).toEqual([0, 1])
    expect(state.latest?.repo.rev).toBe('3l000000000b2')
    expect([...state.blobs.keys()].sort()).toEqual([...cids].sort())
    const entry = state.blobs.get(cids[1] as string)
    const parts: Uint8Array[] = []
    for await (const chunk of archive.read(entry!.object, 'application/octet-stream')) parts.push(chunk)
    expect(Buffer.concat(parts).equals(blobs[1] as Buffer)).toBe(true)
    expect(await archive.readPreferences(state.latest!.preferences!)).toHaveLength(1)
    expect((await archive.verify()).problems).toEqual([])
    const deep = await archive.verify({ deep: true })
    expect(deep).toMatchObject({ manifests: 2, objects: 7, problems: [], deep: true })
    expect(await archive.readAccountState(state.manifests[0]!.accountState!)).toEqual({
      email: 'a@example.com',
      emailConfirmed: true,
    })
    // A writer without the decryption key still checks at rest, and can append.
    const writer = new AccountArchive(archive.store, writerKeys(keys), did)
    expect((await writer.verify()).problems).toEqual([])
    expect(await store.has(entry!.object.key)).toBe(true)
    expect(await store.get(`${did}/blobs/bafknothere`)).toBeUndefined()
  })

  it('finds every stored object changed in turn, a changed or dropped manifest, a stray, a missing object', async () => {
    await twoRuns(archive)
    const keys = await keysOf(store)
    expect(keys).toHaveLength(9) // 2 repos, 3 blobs, 1 preferences, 1 account state, 2 manifests
    for (const key of keys) {
      const original = await bytesOf(store, key)
      const changed = Buffer.from(original)
      const at = Math.floor(changed.length / 2)
      changed[at] = (changed[at] as number) ^ 0x40
      await store.put(key, [changed])
      expect((await archive.verify()).problems.length, key).toBeGreaterThan(0)
      expect((await archive.verify({ deep: true })).problems.length, key).toBeGreaterThan(0)
      await store.put(key, [original])
    }
    expect((await archive.verify()).problems).toEqual([])

    // A manifest re-signed by someone else's key is refused, though it is well formed.
    const first = AccountArchive.manifestKey(did, 0)
    const forged = new AccountArchive(
      new FsArchiveStore(join(dir, 'forged')),
      await generateArchiveKeys(),
      did,
    )
    await twoRuns(forged)
    const original = await bytesOf(store, first)
    await store.put(first, [await bytesOf(forged.store, first)])
    expect((await archive.verify()).problems[0]).toMatch(/signed by did:key:.*not by this archive's key/)
    await store.put(first, [original])

    // The first manifest dropped: the chain no longer starts at 0.
    await store.delete(first)
    expect((await archive.verify()).problems[0]).toMatch(/expected manifest 0/)
    await store.put(first, [original])

    await store.put(`${did}/blobs/bafkstray`, [Buffer.from('x')])
    expect((await archive.verify()).problems).toEqual([
      `${did}/blobs/bafkstray: stray object no manifest names (a backup run that did not finish)`,
    ])
    await store.delete(`${did}/blobs/bafkstray`)

    const state = await archive.load()
    await store.delete(state.latest!.repo.object.key)
    expect((await archive.verify()).problems[0]).toMatch(/is not in the store/)
    expect(createHash('sha256').update(original).digest('hex')).toBe(state.latest!.prev)
  })
})
