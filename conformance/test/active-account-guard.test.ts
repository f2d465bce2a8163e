import { Secp256k1Keypair } from '@atproto/crypto'
import type { TransferPds } from '@pds-transfer/atproto-pds'
import { bearerSourceClient, EngineError, ImportFailure } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { startReferencePds } from '../src/harness/reference-pds.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import { TRANSFER_SCOPES } from '../src/harness/test-authorizer.ts'

/** The account's head as its PDS serves it (what a transfer into it would replace). */
async function latestCommit(pdsUrl: string, did: string) {
  const res = await fetch(`${pdsUrl}/xrpc/com.atproto.sync.getLatestCommit?did=${encodeURIComponent(did)}`)
  return { status: res.status, body: await res.json() }
}

/**
 * Issue 26: a transfer into a DID that is an active account of the destination is refused by
 * the engine, and by each account sink on its own (a race or a bug past the engine's check must
 * not import over a live account): the SQLite test PDS and the reference PDS.
 */
describe('a transfer into an active local account', () => {
  let plcDir: PlcDirectory

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
  })
  afterAll(() => plcDir?.close())

  describe('SQLite test PDS', () => {
    let source: SourceServer
    let dest: DestinationServer
    let alice: FixtureAccount
    const client = () =>
      bearerSourceClient(
        source.url,
        source.auth.issue({ did: alice.did, clientId: dest.clientId }, TRANSFER_SCOPES),
      )
    const head = () =>
      dest.store.db.prepare('SELECT rev FROM repo_root WHERE did = ?').get(alice.did) as { rev: string }

    beforeAll(async () => {
      source = await startSourceServer({ plc: plcDir })
      dest = await startDestinationServer({ plc: plcDir })
      alice = await buildAccount(source.store, {
        plcUrl: plcDir.url,
        pdsUrl: source.url,
        pdsRotationKey: source.rotationKey,
        shape: { posts: 3, blobSizes: [1000] },
      })
      // The same DID is also a live account at the destination, with a repo of its own.
      const key = await Secp256k1Keypair.create({ exportable: true })
      await dest.store.createAccount({ did: alice.did, signingKey: key })
      await dest.store.writeRecords(alice.did, key, [
        {
          collection: 'app.bsky.feed.post',
          rkey: '3klocal000000',
          record: { $type: 'app.bsky.feed.post', text: 'live here', createdAt: new Date().toISOString() },
        },
      ])
    }, 60_000)
    afterAll(async () => {
      await dest?.close()
      await source?.close()
    })

    it('the engine refuses to start: AccountAlreadyActive', async () => {
      const refused = await dest.engine.start({ did: alice.did, client: client() }).catch((e) => e)
      expect(refused).toBeInstanceOf(EngineError)
      expect((refused as EngineError).code).toBe('AccountAlreadyActive')
    })

    it("past the engine's check (it raced an activation), the sink refuses and the live account is untouched", async () => {
      const before = head()
      const isActive = dest.sink.isActive.bind(dest.sink)
      dest.sink.isActive = async () => false
      let t: Awaited<ReturnType<typeof dest.engine.wait>>
      try {
        t = await dest.engine.wait((await dest.engine.start({ did: alice.did, client: client() })).transferId)
      } finally {
        dest.sink.isActive = isActive
      }
      expect(t.status).toBe('failed')
      // Named for what it is, not blamed on the source.
      expect(t.failure).toMatchObject({
        reason: 'AccountAlreadyActive',
        message: expect.stringMatching(/active account here/),
      })
      expect(t.progress.framesReceived).toBe(0)
      expect(await dest.sink.isActive(alice.did)).toBe(true)
      expect(head()).toEqual(before)
      for (const cid of alice.blobs.keys()) expect(await dest.sink.hasBlob(alice.did, cid)).toBe(false)
    })
  })

  describe('reference PDS', () => {
    let pds: TransferPds

    beforeAll(async () => {
      pds = await startReferencePds(plcDir)
    }, 60_000)
    afterAll(() => pds?.close())

    it('the sink refuses an active account with a clear error; its key and repo are untouched', async () => {
      const carol = await seedReferenceAccount(pds.url, {
        handle: 'carol.test',
        email: 'carol@example.com',
        password: 'carol-password-1',
        posts: 2,
        images: 0,
        follows: 0,
      })
      const key = (await pds.pds.ctx.actorStore.keypair(carol.did)).did()
      const before = await latestCommit(pds.url, carol.did)
      expect(before.status).toBe(200)

      const refused = await pds.sink.createDeactivatedAccount(carol.did, {}).catch((e) => e)
      expect(refused).toBeInstanceOf(ImportFailure)
      expect(refused).toMatchObject({ reason: 'AccountAlreadyActive' })
      expect((refused as Error).message).toMatch(/is an active account on this PDS/)

      expect(await pds.sink.isActive(carol.did)).toBe(true)
      expect((await pds.pds.ctx.actorStore.keypair(carol.did)).did()).toBe(key)
      expect(await latestCommit(pds.url, carol.did)).toEqual(before)
      // And the engine, first: the DID is hosted here.
      const started = await pds.engine
        .start({ did: carol.did, client: bearerSourceClient(pds.url, 'unused') })
        .catch((e) => e)
      expect(started).toMatchObject({ code: 'AccountAlreadyActive' })
    }, 60_000)
  })
})
