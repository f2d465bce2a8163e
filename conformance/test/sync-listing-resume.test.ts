import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CAPABILITY, DRAFT_OAUTH_SCOPE, NSID, PLAIN_PDS_OAUTH_SCOPE } from '@pds-transfer/core'
import type { InboundTransfer } from '@pds-transfer/destination'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { ChildPeer } from '../src/harness/child-peer.ts'
import { freePort, startDestinationServer } from '../src/harness/destination-server.ts'
import { startDraftPds } from '../src/harness/draft-pds.ts'
import { type HttpFault, type HttpFaultProxy, startHttpFaultProxy } from '../src/harness/http-fault-proxy.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { SqliteAccountStore } from '../src/store/sqlite-account-store.ts'
import {
  type DrillSource,
  destinationProcessEnv,
  expectMoved,
  expectNothingHalfWritten,
  plcCode,
  type SourceRepo,
  signInAt,
  sourceRecords,
} from './sync-drill-checks.ts'

/** Seven blobs listed two to a page: four pages, the last one short. */
const PAGE = 2
const SHAPE = { posts: 10, images: 7, imageBytes: 60 * 1024, follows: 2 }
const MIN_RECORDS = SHAPE.posts + SHAPE.images + SHAPE.follows
const DESTINATION_SCRIPT = join(import.meta.dirname, '../src/harness/destination-process.ts')
const SYNC = (m: string) => `com.atproto.sync.${m}`

/**
 * Issue 19: the listBlobs cursor across pages on resume, through the whole engine, with more
 * blobs than one listBlobs page (the engine's page size set to two). A pull cut mid-listing (its
 * getBlob failing until the retries are spent) or SIGKILLed mid-blob is resumed: the cursor
 * recorded is the one after the last page wholly held; a plain source and a draft source with
 * `resumable` list on from it, a draft source without `resumable` lists from the start; either
 * way getBlob is asked exactly for the blobs not held, each once, and the account ends identical.
 */
describe('listBlobs over several pages, resumed after a cut or a kill', () => {
  let plc: PlcDirectory
  let plain: Awaited<ReturnType<typeof startPlainPds>>
  let seq = 0
  const cleanups: (() => Promise<void>)[] = []

  beforeAll(async () => {
    plc = await startPlcDirectory()
    plain = await startPlainPds(plc.namedUrl)
  }, 120_000)
  afterEach(async () => {
    for (const clean of cleanups.splice(0).reverse()) await clean()
  })
  afterAll(async () => {
    await plain?.close()
    await plc?.close()
  })

  /** The plain PDS, or a fresh source serving the draft with `capabilities`. */
  async function source(kind: 'plain' | string[]): Promise<DrillSource> {
    if (kind === 'plain') return { url: plain.url, pds: plain.pds, scope: PLAIN_PDS_OAUTH_SCOPE }
    const draft = await startDraftPds(plc.namedUrl, { capabilities: kind })
    cleanups.push(() => draft.close())
    return { url: draft.url, pds: draft.pds, scope: DRAFT_OAUTH_SCOPE }
  }

  async function seed(on: DrillSource): Promise<SeededAccount> {
    const n = ++seq
    return seedReferenceAccount(on.url, {
      ...SHAPE,
      handle: `pages${n}.test`,
      email: `pages${n}@example.com`,
      password: `listing-pages-password-${n}`,
    })
  }

  async function proxy(
    on: DrillSource,
    decide: (nsid: string, n: number) => HttpFault,
  ): Promise<HttpFaultProxy> {
    const started = await startHttpFaultProxy(on.url, ({ nsid, n }) => decide(nsid, n))
    cleanups.push(() => started.close())
    return started
  }

  /** The CIDs of the blobs held at the destination. */
  const heldBlobs = (store: SqliteAccountStore): string[] =>
    store.db.prepare('SELECT cid FROM blob').pluck().all() as string[]

  /**
   * What a resume asked of the source (`asked`, the requests after the failure or the kill)
   * must be: listBlobs from `cursor` (null: from the start), getBlob exactly the blobs not held
   * before (`held`), each once, and no getRepo.
   */
  function expectOnlyWhatIsMissing(
    asked: HttpFaultProxy['requests'],
    alice: SeededAccount,
    held: string[],
    cursor: string | null,
  ): void {
    expect(asked.filter((r) => r.nsid === SYNC('getRepo'))).toEqual([])
    expect(asked.find((r) => r.nsid === SYNC('listBlobs'))?.query.get('cursor') ?? null).toBe(cursor)
    // A 401 is a restored session learning the DPoP nonce (sent again at once), not a fetch.
    const fetched = asked
      .filter((r) => r.nsid === SYNC('getBlob') && r.status !== 401)
      .map((r) => r.query.get('cid'))
    const missing = [...alice.blobs.keys()].filter((cid) => !held.includes(cid))
    expect(missing.length).toBeGreaterThan(0)
    expect(fetched.sort()).toEqual(missing.sort())
  }

  /**
   * A pull whose getBlob fails from the fourth blob on (the second page half held) until the
   * retries are spent, then resumed through a clean proxy and completed.
   */
  async function cutThenResume(on: DrillSource, resumesAtCursor: boolean) {
    const alice = await seed(on)
    let failing = true
    const via = await proxy(on, (nsid, n) =>
      failing && nsid === SYNC('getBlob') && n >= 3 ? { status: 500 } : undefined,
    )
    const dest = await startDestinationServer({
      plc,
      listBlobsLimit: PAGE,
      limits: { retry: { attempts: 2, baseDelayMs: 20 } },
    })
    cleanups.push(() => dest.close())
    const client = await signInAt(plc.url, on, alice, () => ({ '*': via.url }))
    const t = await dest.engine.start({ did: alice.did, client })
    const failed = await dest.engine.wait(t.transferId)
    expect(failed).toMatchObject({ status: 'failed', failure: { reason: 'SourceUnreachable' } })
    await expectNothingHalfWritten(dest.store)
    // The cursor after page one: page two was not wholly held, so it is listed again.
    const listings = via.requests.filter((r) => r.nsid === SYNC('listBlobs'))
    expect(listings.map((r) => r.query.get('cursor'))).toEqual([null, expect.any(String)])
    expect(failed.blobCursor).toBe(listings[1]?.query.get('cursor'))
    const held = heldBlobs(dest.store)
    expect(held.length).toBeGreaterThanOrEqual(PAGE)
    expect(held.length).toBeLessThan(2 * PAGE)

    failing = false
    const before = via.requests.length
    const records = await sourceRecords(plc.url, on, alice.did)
    await dest.engine.resume(t.transferId, client)
    const pulled = await dest.engine.wait(t.transferId)
    expect(pulled.failure).toBeUndefined()
    expect(pulled).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    expectOnlyWhatIsMissing(
      via.requests.slice(before),
      alice,
      held,
      resumesAtCursor ? (failed.blobCursor as string) : null,
    )

    const done = await dest.engine.complete(t.transferId, {
      plcToken: (await plcCode(on, alice.did)) as string,
    })
    await expectMoved({
      plcUrl: plc.url,
      source: on,
      store: dest.store,
      destUrl: dest.url,
      alice,
      done,
      records,
      minRecords: MIN_RECORDS,
    })
    return { via, before }
  }

  /**
   * A pull in a destination process, SIGKILLed while the blobs of page two are held mid-body
   * (page one committed, its cursor recorded), restarted on the same data and completed.
   */
  async function killThenRecover(on: DrillSource, resumesAtCursor: boolean) {
    const alice = await seed(on)
    let release = () => {}
    const released = new Promise<void>((resolve) => {
      release = resolve
    })
    let holding = true
    const via = await proxy(on, (nsid, n) =>
      holding && nsid === SYNC('getBlob') && n >= PAGE ? { holdAfter: 20_000, until: released } : undefined,
    )
    cleanups.push(async () => release())
    const dir = await mkdtemp(join(tmpdir(), 'listing-kill-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const env = {
      ...destinationProcessEnv({
        plcUrl: plc.url,
        dir,
        port: await freePort(),
        source: on,
        alice,
        via: via.url,
      }),
      LIST_BLOBS_LIMIT: String(PAGE),
    }
    const first = ChildPeer.fork<{ url: string }>(DESTINATION_SCRIPT, env)
    let transferId: string
    try {
      await first.ready
      transferId = (await first.call<InboundTransfer>({ start: alice.did })).transferId
      const incoming = async () =>
        (await readdir(join(dir, 'blobs')).catch(() => [])).filter((f) => f.startsWith('.incoming-')).length
      for (let i = 0; i < 800 && (await incoming()) < PAGE; i++) await new Promise((r) => setTimeout(r, 25))
      expect(await incoming()).toBe(PAGE)
    } finally {
      await first.kill()
    }
    holding = false
    release()
    const killedAt = via.requests.length
    const store = await SqliteAccountStore.open(dir)
    cleanups.push(async () => store.close())
    const held = heldBlobs(store)
    expect(held).toHaveLength(PAGE)

    const second = ChildPeer.fork<{ url: string; recovered: InboundTransfer[] }>(DESTINATION_SCRIPT, env)
    cleanups.push(() => second.kill())
    const { url, recovered } = await second.ready
    expect(recovered.map((t) => t.transferId)).toEqual([transferId])
    // Page one was wholly held before the kill: its cursor is on the record.
    const cursor = via.requests.filter((r) => r.nsid === SYNC('listBlobs'))[1]?.query.get('cursor')
    expect(recovered[0]?.blobCursor).toBe(cursor)
    const pulled = await second.call<InboundTransfer>({ wait: transferId })
    expect(pulled.failure).toBeUndefined()
    expect(pulled).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    expectOnlyWhatIsMissing(
      via.requests.slice(killedAt),
      alice,
      held,
      resumesAtCursor ? (cursor as string) : null,
    )

    const records: SourceRepo = await sourceRecords(plc.url, on, alice.did)
    const done = await second.call<InboundTransfer>({
      complete: transferId,
      plcToken: await plcCode(on, alice.did),
    })
    await expectMoved({
      plcUrl: plc.url,
      source: on,
      store,
      destUrl: url,
      alice,
      done,
      records,
      minRecords: MIN_RECORDS,
    })
  }

  it('plain PDS, cut mid-listing: resumed from the cursor after the last page wholly held, only the missing blobs fetched', async () => {
    await cutThenResume(await source('plain'), true)
  }, 120_000)

  it('draft with resumable, cut mid-listing: exportAccount again, listed on from the cursor, only the missing blobs fetched', async () => {
    const { via, before } = await cutThenResume(
      await source([CAPABILITY.base, CAPABILITY.preferences, CAPABILITY.resumable]),
      true,
    )
    expect(via.requests.slice(before).filter((r) => r.nsid === NSID.exportAccount)).toHaveLength(1)
  }, 120_000)

  it('draft without resumable, cut mid-listing: listed from the start (the cursor dropped), held blobs skipped, only the missing ones fetched', async () => {
    const { via, before } = await cutThenResume(
      await source([CAPABILITY.base, CAPABILITY.preferences]),
      false,
    )
    expect(via.requests.slice(before).filter((r) => r.nsid === NSID.exportAccount)).toEqual([])
  }, 120_000)

  it('plain PDS, SIGKILLed mid-listing: recover() lists on from the recorded cursor, only the missing blobs fetched', async () => {
    await killThenRecover(await source('plain'), true)
  }, 120_000)

  it('draft without resumable, SIGKILLed mid-listing: recover() lists from the start, only the missing blobs fetched', async () => {
    await killThenRecover(await source([CAPABILITY.base, CAPABILITY.preferences]), false)
  }, 120_000)
})
