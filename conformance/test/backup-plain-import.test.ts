import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AtpAgent } from '@atproto/api'
import { AccountArchive, FsArchiveStore, generateArchiveKeys } from '@pds-transfer/archive'
import { backupAccount, exportPlain } from '@pds-transfer/backup'
import { PlcDidResolver } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'

/**
 * Issue 20, "goat-layout export and import round-trip": the plain export of a backup brought back
 * by the reference PDS's own import path, as `goat repo import` and `goat blob upload` do
 * (`com.atproto.repo.importRepo` with repo.car, `uploadBlob` with each `blobs/<cid>`), after the
 * account lost posts and images: every record and blob is back, byte for byte.
 */
describe('a plain export imported back into the account (importRepo, uploadBlob)', () => {
  let plc: PlcDirectory
  let pds: Awaited<ReturnType<typeof startPlainPds>>
  let work: string
  let alice: SeededAccount
  let agent: AtpAgent

  beforeAll(async () => {
    plc = await startPlcDirectory()
    pds = await startPlainPds(plc.namedUrl)
    work = await mkdtemp(join(tmpdir(), 'plain-import-'))
    alice = await seedReferenceAccount(pds.url, {
      handle: 'roundtrip.test',
      email: 'roundtrip@example.com',
      password: 'round-trip-password',
      posts: 40,
      images: 3,
      follows: 2,
    })
    agent = new AtpAgent({ service: pds.url })
    await agent.login({ identifier: alice.handle, password: alice.password })
  }, 120_000)
  afterAll(async () => {
    await pds?.close()
    await plc?.close()
    if (work) await rm(work, { recursive: true, force: true })
  })

  /** Every record of the account, as `uri → cid`. */
  async function records(): Promise<Map<string, string>> {
    const out = new Map<string, string>()
    const { collections } = (await agent.com.atproto.repo.describeRepo({ repo: alice.did })).data
    for (const collection of collections) {
      let cursor: string | undefined
      do {
        const page = await agent.com.atproto.repo.listRecords({
          repo: alice.did,
          collection,
          limit: 100,
          cursor,
        })
        for (const r of page.data.records) out.set(r.uri, r.cid)
        cursor = page.data.records.length === 100 ? page.data.cursor : undefined
      } while (cursor)
    }
    return out
  }

  it('brings back every record and blob the account lost', async () => {
    const keys = await generateArchiveKeys()
    const archive = new AccountArchive(new FsArchiveStore(join(work, 'archive')), keys, alice.did)
    await backupAccount(alice.did, { archive, resolver: new PlcDidResolver(plc.url), workDir: work })
    const out = join(work, 'export')
    await exportPlain(archive, out, work)
    const before = await records()

    // The loss: every post deleted, and with them the images only they referenced.
    const lost = [...before.keys()].filter((uri) => uri.includes('/app.bsky.feed.post/'))
    for (const uri of lost) {
      const [, , repo, collection, rkey] = uri.split('/')
      await agent.com.atproto.repo.deleteRecord({
        repo: repo as string,
        collection: collection as string,
        rkey: rkey as string,
      })
    }
    expect((await records()).size).toBe(before.size - lost.length)

    await agent.com.atproto.repo.importRepo(new Uint8Array(await readFile(join(out, 'repo.car'))), {
      encoding: 'application/vnd.ipld.car',
    })
    // The records are back and name their images, which the PDS no longer holds.
    expect((await agent.com.atproto.repo.listMissingBlobs()).data.blobs.length).toBe(alice.blobs.size)
    const blobs = await readdir(join(out, 'blobs'))
    expect(blobs.length).toBe(alice.blobs.size)
    for (const cid of blobs) {
      const uploaded = await agent.com.atproto.repo.uploadBlob(
        new Uint8Array(await readFile(join(out, 'blobs', cid))),
      )
      expect(uploaded.data.blob.ref.toString()).toBe(cid)
    }

    expect(await records()).toEqual(before)
    for (const [cid, bytes] of alice.blobs) {
      const res = await fetch(`${pds.url}/xrpc/com.atproto.sync.getBlob?did=${alice.did}&cid=${cid}`)
      expect(res.status, cid).toBe(200)
      expect(Buffer.from(await res.arrayBuffer()).equals(Buffer.from(bytes)), cid).toBe(true)
    }
    expect((await agent.com.atproto.repo.listMissingBlobs()).data.blobs).toEqual([])
  }, 120_000)
})
