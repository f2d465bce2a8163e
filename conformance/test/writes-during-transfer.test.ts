import { decodeCid } from '@atproto/lex-data'
import { NSID } from '@pds-transfer/core'
import { bearerSourceClient, type SourceClient } from '@pds-transfer/destination'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount, fixtureBytes } from '../src/fixtures/build-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { overrideSource } from '../src/harness/override-source.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'

const SCOPES = [NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus, 'com.atproto.sync.getBlob']

/**
 * Erratum E4 and decision 6: a post (with an image) written on the source after the export and
 * before completion reaches the destination; completion is never allowed to drop it, and a
 * write either lands before the final head or is refused (spec/completion.md, C9).
 */
describe('erratum E4: writes between the export and completeTransfer', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let dest: DestinationServer
  /** Set by a test: runs inside the source's `deactivate`, before it takes effect (a racing write). */
  let beforeDeactivate: (() => Promise<void>) | undefined
  /** Set by a test: the rev the source diffs from instead of the one asked (a diff that lacks blocks). */
  let diffSince: string | undefined
  /** The `since` of every repo snapshot the source served (undefined: the whole repo). */
  const snapshots: (string | undefined)[] = []

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({
      plc: plcDir,
      wrapSource: (store) =>
        overrideSource(store, {
          async deactivate(...args) {
            const racing = beforeDeactivate
            beforeDeactivate = undefined
            await racing?.()
            return store.deactivate(...args)
          },
          snapshotRepo(did, options) {
            const since = options?.since === undefined ? undefined : (diffSince ?? options.since)
            snapshots.push(since)
            return store.snapshotRepo(did, since === undefined ? {} : { since })
          },
        }),
    })
    dest = await startDestinationServer({ plc: plcDir })
  }, 60_000)

  afterAll(async () => {
    await dest?.close()
    await source?.close()
    await plcDir?.close()
  })

  /** `prepare` writes on the source before the move starts. */
  async function importAccount(prepare?: (account: FixtureAccount) => Promise<void>) {
    const account = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts: 20, blobSizes: [25_000, 26_000] },
    })
    await prepare?.(account)
    const client: SourceClient = bearerSourceClient(
      source.url,
      source.auth.issue({ did: account.did, clientId: dest.clientId }, SCOPES),
    )
    const t = await dest.engine.wait((await dest.engine.start({ did: account.did, client })).transferId)
    expect(t.stage).toBe('awaitingPlcToken')
    return { account, transferId: t.transferId, rev: t.repo?.rev as string }
  }

  /** A new post with a new image, as the user would write it on the source. */
  async function writePost(account: FixtureAccount, rkey: string, seed: number) {
    const bytes = fixtureBytes(31_000, seed)
    const cid = await source.store.putBlob(account.did, bytes)
    account.blobs.set(cid.toString(), bytes)
    const image = { $type: 'blob', ref: decodeCid(cid.bytes), mimeType: 'image/jpeg', size: bytes.length }
    await source.store.writeRecords(account.did, account.signingKey, [
      {
        collection: 'app.bsky.feed.post',
        rkey,
        record: {
          $type: 'app.bsky.feed.post',
          text: `written during the transfer (${rkey})`,
          createdAt: new Date().toISOString(),
          embed: { $type: 'app.bsky.embed.images', images: [{ alt: 'late', image }] },
        },
      },
    ])
    return cid.toString()
  }

  const latestToken = (did: string) =>
    source.store.outbox.filter((m) => m.did === did).at(-1)?.token as string

  async function expectIdentical(account: FixtureAccount) {
    expect(Buffer.from(await dest.store.exportCar(account.did))).toEqual(
      Buffer.from(await source.store.exportCar(account.did)),
    )
    for (const [cid] of account.blobs) expect(await dest.sink.hasBlob(account.did, cid), cid).toBe(true)
  }

  const blobCid = async (bytes: Uint8Array) => CID.createV1(0x55, await sha256.digest(bytes)).toString()

  /** Plaintext bytes of the source's repo CAR now: whole, or only what was written after `since`. */
  const carLength = async (did: string, since?: string) => {
    const snapshot = await source.store.snapshotRepo(did, since === undefined ? {} : { since })
    await snapshot.release()
    return snapshot.carLength
  }

  it('a write after the export: completion catches up first, then moves the account', async () => {
    const { account, transferId, rev } = await importAccount()
    const token = latestToken(account.did)
    const lateBlob = await writePost(account, '3latepost0001', 7)
    expect(await dest.sink.hasBlob(account.did, lateBlob)).toBe(false)

    const done = await dest.engine.complete(transferId, { plcToken: token })
    expect(done.failure).toBeUndefined()
    expect(done).toMatchObject({ status: 'completed', catchUps: 1 })
    await expectIdentical(account)
    // The catch-up export did not email the user another token.
    expect(latestToken(account.did)).toBe(token)
    // Extension repo-diff: the catch-up brought the blocks written since the export, not the repo.
    const diff = await carLength(account.did, rev)
    expect(done.catchUpBytes?.repo).toBe(diff)
    expect(diff).toBeLessThan((await carLength(account.did)) / 4)
  })

  it('a catch-up after edits and deletes: the held repo plus the diff is exactly the new repo', async () => {
    const { account, transferId, rev } = await importAccount(async (a) => {
      await writePost(a, '3editedpost01', 11)
      await writePost(a, '3deletedpost1', 12)
    })
    await writePost(account, '3latepost0002', 8)
    await source.store.writeRecords(account.did, account.signingKey, [
      {
        collection: 'app.bsky.feed.post',
        rkey: '3editedpost01',
        update: true,
        record: { $type: 'app.bsky.feed.post', text: 'edited', createdAt: new Date().toISOString() },
      },
      { collection: 'app.bsky.feed.post', rkey: '3deletedpost1' },
    ])
    const done = await dest.engine.complete(transferId, { plcToken: latestToken(account.did) })
    expect(done).toMatchObject({ status: 'completed', catchUps: 1 })
    // Same blocks at both ends: the deleted post and the old version of the edited one are gone.
    await expectIdentical(account)
    expect(done.catchUpBytes?.repo).toBe(await carLength(account.did, rev))
  })

  it('a diff that lacks blocks the destination does not hold is asked for again whole', async () => {
    const { account, transferId, rev } = await importAccount()
    await writePost(account, '3latepost0003', 9)
    // The source diffs from after the first write: the blocks of that write are in neither.
    diffSince = await source.store.currentRev(account.did)
    await writePost(account, '3latepost0004', 10)
    snapshots.length = 0
    try {
      const done = await dest.engine.complete(transferId, { plcToken: latestToken(account.did) })
      expect(done.failure).toBeUndefined()
      expect(done).toMatchObject({ status: 'completed', catchUps: 1 })
      await expectIdentical(account)
      // A diff was asked for (since the export's rev) and served short; then the whole repo,
      // the only repo bytes counted (nothing of the diff was kept).
      expect(snapshots).toEqual([diffSince, undefined])
      expect(done.catchUpBytes?.repo).toBe(await carLength(account.did))
      expect(await carLength(account.did, rev)).toBeLessThan(await carLength(account.did))
    } finally {
      diffSince = undefined
    }
  })

  it('a blob written before the pause that sorts before the stream cursor is fetched from the paused account', async () => {
    const { account, transferId } = await importAccount()
    const cursor = (await dest.engine.get(transferId))?.blobCursor as string
    // A seed whose blob's CID sorts before the cursor: the catch-up stream lists after it, so
    // only getBlob can bring this one, from an account the source has paused by then.
    let seed = 100
    while ((await blobCid(fixtureBytes(31_000, seed))) >= cursor) seed++
    const early = await writePost(account, '3earlyblob001', seed)
    const done = await dest.engine.complete(transferId, { plcToken: latestToken(account.did) })
    expect(done.failure).toBeUndefined()
    expect(done).toMatchObject({ status: 'completed', catchUps: 1, missingBlobs: [] })
    expect(await dest.sink.hasBlob(account.did, early)).toBe(true)
    await expectIdentical(account)
    // Nobody else reads the paused account's blobs.
    const anonymous = await fetch(
      `${source.url}/xrpc/com.atproto.sync.getBlob?did=${encodeURIComponent(account.did)}&cid=${early}`,
    )
    expect(anonymous.status).toBe(400)
  })

  it('a write racing the deactivation: it lands before the final head, the destination catches up, the same code finishes', async () => {
    const { account, transferId } = await importAccount()
    const code = latestToken(account.did)
    beforeDeactivate = async () => {
      await writePost(account, '3racepost0001', 8)
    }
    const done = await dest.engine.complete(transferId, { plcToken: code })
    expect(done.failure).toBeUndefined()
    expect(done).toMatchObject({ status: 'completed', stage: 'activated', catchUps: 1 })
    expect((await source.store.getAccount(account.did))?.status).toBe('deactivated')
    await expectIdentical(account)
    // Paused, not reopened: no second code was needed or sent.
    expect(latestToken(account.did)).toBe(code)
  })

  it('a write that began before the deactivation and commits after it is refused, not lost', async () => {
    const { account, transferId } = await importAccount()
    // The write passes the "is it active" check, then waits (a slow signature) while the
    // account is deactivated for the move; its commit must not land after the final head.
    let release = () => {}
    const held = new Promise<void>((r) => (release = r))
    let signing = () => {}
    const started = new Promise<void>((r) => (signing = r))
    const slowKey = Object.assign(Object.create(account.signingKey), {
      async sign(msg: Uint8Array) {
        signing()
        await held
        return account.signingKey.sign(msg)
      },
    }) as typeof account.signingKey
    const write = source.store.writeRecords(account.did, slowKey, [
      {
        collection: 'app.bsky.feed.post',
        rkey: '3slowpost0001',
        record: { $type: 'app.bsky.feed.post', text: 'slow', createdAt: new Date().toISOString() },
      },
    ])
    const outcome = write.then(
      () => 'acknowledged',
      (err: Error) => err.message,
    )
    await started
    const done = await dest.engine.complete(transferId, { plcToken: latestToken(account.did) })
    release()
    expect(await outcome).toMatch(/RepoDeactivated/)
    expect(done).toMatchObject({ status: 'completed', stage: 'activated' })
    await expectIdentical(account)
  })

  it('once deactivated for the move, the source takes no more writes', async () => {
    const { account, transferId } = await importAccount()
    await dest.engine.complete(transferId, { plcToken: latestToken(account.did) })
    await expect(writePost(account, '3toolate00001', 9)).rejects.toThrow(/RepoDeactivated/)
  })
})
