import { AtpAgent } from '@atproto/api'
import * as plcLib from '@did-plc/lib'
import { openRepoSnapshot, type TransferPds } from '@pds-transfer/atproto-pds'
import { PLAIN_PDS_OAUTH_SCOPE } from '@pds-transfer/core'
import {
  PlainPdsReader,
  PlcDidResolver,
  type SourceClient,
  SqliteInboundTransferStore,
  TransferEngine,
} from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { oauthSourceClient } from '../src/harness/plain-pds-oauth.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { startReferencePds } from '../src/harness/reference-pds.ts'

/** What a move from a plain PDS asks its OAuth server for (spec/dialect-plain-pds.md, "Scopes"). */
const SCOPE = PLAIN_PDS_OAUTH_SCOPE

/**
 * A whole move from a plain `@atproto/pds` (nothing of ours in front, OAuth at its own
 * provider) into the reference-PDS destination: the data pulled verified, the PLC code emailed
 * by the source once the data moved, then completion in the order a plain PDS allows (the writes
 * since caught up as a getRepo?since diff, signPlcOperation with the old server's keys dropped,
 * one more diff, PLC submitted, the account active at B, A deactivated last).
 */
describe('a move from a plain PDS, completed', () => {
  let plc: PlcDirectory
  let plain: Awaited<ReturnType<typeof startPlainPds>>
  let b: TransferPds

  beforeAll(async () => {
    plc = await startPlcDirectory()
    plain = await startPlainPds(plc.namedUrl)
    b = await startReferencePds(plc)
  }, 180_000)
  afterAll(async () => {
    await b?.close()
    await plain?.close()
    await plc?.close()
  })

  /** A reader and an engine on one transfer store, into B. */
  function destination() {
    const store = new SqliteInboundTransferStore(':memory:')
    const resolver = new PlcDidResolver(plc.url)
    const common = { sink: b.sink, store, resolver, serviceUrl: b.url }
    const reader = new PlainPdsReader({ ...common, limits: { retry: { attempts: 3, baseDelayMs: 20 } } })
    const engine = new TransferEngine({
      ...common,
      keys: b.keys,
      plc: new plcLib.Client(plc.url),
      rotationKey: b.pds.ctx.plcRotationKey.did(),
      limits: { retry: { attempts: 3, baseDelayMs: 20 } },
    })
    return { store, reader, engine }
  }

  async function seeded(
    n: number,
    images = 3,
  ): Promise<{ alice: SeededAccount; client: SourceClient; agent: AtpAgent }> {
    const alice = await seedReferenceAccount(plain.url, {
      handle: `plainmove${n}.test`,
      email: `plainmove${n}@example.com`,
      password: `plain-move-password-${n}`,
      posts: 40,
      images,
      follows: 5,
    })
    const { client } = await oauthSourceClient({
      pdsUrl: plain.url,
      plcUrl: plc.url,
      did: alice.did,
      account: { username: alice.handle, password: alice.password },
      scope: SCOPE,
    })
    const agent = new AtpAgent({ service: plain.url })
    await agent.login({ identifier: alice.did, password: alice.password })
    return { alice, client, agent }
  }

  const post = (agent: AtpAgent, did: string, text: string) =>
    agent.com.atproto.repo.createRecord({
      repo: did,
      collection: 'app.bsky.feed.post',
      record: { $type: 'app.bsky.feed.post', text, createdAt: new Date().toISOString() },
    })

  const carOf = async (ctx: TransferPds['pds']['ctx'], did: string, since?: string) => {
    const { dbLocation } = await ctx.actorStore.getLocation(did)
    const snapshot = openRepoSnapshot(dbLocation, since)
    await snapshot.release()
    return snapshot.carLength
  }

  it('moves the account: writes after the pull arrive as a diff, PLC names B, A is deactivated, B takes posts', async () => {
    const { alice, client, agent } = await seeded(1)
    const { reader, engine } = destination()
    const t = await reader.start({ did: alice.did, client })
    const pulled = await reader.pull(t.transferId, client)
    expect(pulled.transfer.failure).toBeUndefined()
    expect(pulled.transfer).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    // The code was asked for once the data had moved, by the source's own email.
    const code = await plain.plcToken(alice.did)
    expect(code).toBeDefined()
    expect(pulled.transfer.plcCodeRequestedAt).toBeDefined()

    // The user goes on posting at A while reading their email.
    const late = await post(agent, alice.did, 'written after the pull')
    const plcBefore = await new plcLib.Client(plc.url).getDocumentData(alice.did)

    engine.attach(t.transferId, client)
    const done = await engine.complete(t.transferId, { plcToken: code as string })
    expect(done.failure).toBeUndefined()
    expect(done).toMatchObject({ status: 'completed', stage: 'activated', catchUps: 1 })
    expect(done.sourceLeftActive).toBeUndefined()
    // The catch-up was the diff since the pulled rev, as A's own database counts it.
    expect(done.catchUpBytes?.repo).toBe(await carOf(plain.pds.ctx, alice.did, pulled.transfer.repo?.rev))
    expect(done.catchUpBytes?.repo).toBeLessThan(await carOf(plain.pds.ctx, alice.did))

    const data = await new plcLib.Client(plc.url).getDocumentData(alice.did)
    expect(data.services.atproto_pds?.endpoint).toBe(b.url)
    expect(data.verificationMethods.atproto).toBe(done.signingKey)
    // The old server's key is gone; ours is there.
    for (const key of plcBefore.rotationKeys) expect(data.rotationKeys).not.toContain(key)
    expect(data.rotationKeys).toContain(b.pds.ctx.plcRotationKey.did())

    // A is deactivated and refuses writes; B holds the late post and takes new ones.
    await expect(post(agent, alice.did, 'too late')).rejects.toThrow(/deactivated/i)
    const [, , , collection, rkey] = late.data.uri.split('/')
    const there = await fetch(
      `${b.url}/xrpc/com.atproto.repo.getRecord?repo=${alice.did}&collection=${collection}&rkey=${rkey}`,
    )
    expect(((await there.json()) as { cid: string }).cid).toBe(late.data.cid)
    expect(await carOf(b.pds.ctx, alice.did)).toBeGreaterThan(0)
    // The email came along (scope account:email), and with it a sign-in record for a password.
    const account = await b.pds.ctx.accountManager.getAccount(alice.did as `did:plc:${string}`, {
      includeDeactivated: true,
    })
    expect(account?.email).toBe('plainmove1@example.com')
  })

  it('a wrong code: the source never stopped, the user is back at the code step and can ask for a new one', async () => {
    const { alice, client, agent } = await seeded(2)
    const { reader, engine } = destination()
    const t = await reader.start({ did: alice.did, client })
    await reader.pull(t.transferId, client)
    engine.attach(t.transferId, client)
    await expect(engine.complete(t.transferId, { plcToken: 'WRONG-CODE' })).rejects.toThrow(/code/)
    const back = await engine.get(t.transferId)
    expect(back).toMatchObject({ status: 'importing', stage: 'awaitingPlcToken' })
    expect(back?.failure?.message).toMatch(/did not accept the code/)
    // Nothing is dark: A still takes writes, and PLC still names A.
    await post(agent, alice.did, 'still here')
    const data = await new plcLib.Client(plc.url).getDocumentData(alice.did)
    expect(data.services.atproto_pds?.endpoint).toBe(plain.url)
    // "Email me a new code" works on a plain PDS too, and that code finishes the move.
    const first = await plain.plcToken(alice.did)
    await engine.requestPlcToken(t.transferId)
    const second = await plain.plcToken(alice.did)
    expect(second).toBeDefined()
    expect(second).not.toBe(first)
    const done = await engine.complete(t.transferId, { plcToken: second as string })
    expect(done).toMatchObject({ status: 'completed', stage: 'activated' })
  })

  it('the engine picks the plain dialect itself, and a cancel stops its pull at once', async () => {
    // More images than the pull fetches at once (4): some are still to be asked when it stops.
    const { alice, client } = await seeded(3, 12)
    const { engine } = destination()
    // Each blob answer waits until released: the pull is surely mid-blobs when cancelled.
    let release: () => void = () => {}
    const held = new Promise<void>((resolve) => {
      release = resolve
    })
    let blobsAsked = 0
    let cancelled = false
    let askedAfterCancel = 0
    const slow: SourceClient = {
      url: client.url,
      fetch: async (path, init) => {
        if (path.includes('com.atproto.sync.getBlob')) {
          blobsAsked++
          if (cancelled) askedAfterCancel++
          await held
        }
        return client.fetch(path, init)
      },
    }
    const t = await engine.start({ did: alice.did, client: slow })
    expect(t.dialect).toBe('plain')
    while (blobsAsked === 0) await new Promise((r) => setTimeout(r, 10))
    cancelled = true
    const stopping = engine.cancel(t.transferId)
    release()
    const done = await stopping
    expect(done).toMatchObject({ status: 'failed', failure: { reason: 'Cancelled' } })
    // No blob was asked for after the cancel, and the pull did not come back to life.
    expect(askedAfterCancel).toBe(0)
    expect(await engine.wait(t.transferId)).toMatchObject({ status: 'failed', stage: 'failed' })
    // Nothing changed at the source.
    const data = await new plcLib.Client(plc.url).getDocumentData(alice.did)
    expect(data.services.atproto_pds?.endpoint).toBe(plain.url)
  })
})
