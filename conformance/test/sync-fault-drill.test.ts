import { spawn } from 'node:child_process'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import type { DiskBlobStore } from '@atproto/pds'
import * as plcLib from '@did-plc/lib'
import { ReferencePdsSource, startTransferPds } from '@pds-transfer/atproto-pds'
import { DRAFT_OAUTH_SCOPE, NSID, PLAIN_PDS_OAUTH_SCOPE } from '@pds-transfer/core'
import {
  type AccountSink,
  type InboundTransfer,
  PlcDidResolver,
  type RepoStagingFile,
  SqliteInboundTransferStore,
  TransferEngine,
} from '@pds-transfer/destination'
import Database from 'better-sqlite3'
import { CID } from 'multiformats/cid'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { ChildPeer } from '../src/harness/child-peer.ts'
import {
  type DestinationServer,
  freePort,
  startDestinationServer,
} from '../src/harness/destination-server.ts'
import { startFaultProxy } from '../src/harness/fault-proxy.ts'
import { type HttpFault, type HttpFaultProxy, startHttpFaultProxy } from '../src/harness/http-fault-proxy.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { startReferencePds } from '../src/harness/reference-pds.ts'
import { SqliteAccountSink } from '../src/store/sqlite-account-sink.ts'
import { SqliteAccountStore } from '../src/store/sqlite-account-store.ts'
import {
  type DrillSource,
  destinationProcessEnv,
  expectMoved as expectMovedFrom,
  expectNothingHalfWritten,
  plcCode,
  recordsOf,
  type SourceRepo,
  signInAt,
  sourceRecords as sourceRecordsAt,
} from './sync-drill-checks.ts'

/** Small accounts: the drills are about the path, not the volume. */
const SHAPE = { posts: 30, images: 6, imageBytes: 120 * 1024, follows: 3 }
const DESTINATION_SCRIPT = join(import.meta.dirname, '../src/harness/destination-process.ts')
const SYNC = (m: string) => `com.atproto.sync.${m}`

/**
 * Issue 19's proof: faults on the sync path, through the whole engine (TransferEngine.start →
 * pull → awaitingPlcToken → complete) from a real plain `@atproto/pds` (OAuth at its own
 * provider, DPoP proofs made for the PDS's URL while the bytes go through a fault proxy), and
 * the destination SIGKILLed during the blobs and started again on the same data (`recover()`).
 * Every run ends with the account at the destination exactly as the source held it (records
 * verified with @atproto/repo against the key PLC names, every blob's bytes, preferences,
 * email), or failed by a named reason with a way on (resume); and nothing half-written is left
 * (no staged blocks, no temporary blob files, no blob whose bytes do not hash to its CID).
 */
describe('faults on the sync path, through the engine', () => {
  let plc: PlcDirectory
  let plain: Awaited<ReturnType<typeof startPlainPds>>
  /** The source the helpers work on: the plain PDS, or a draft source for the draft drills. */
  let on: DrillSource
  let seq = 0
  const cleanups: (() => Promise<void>)[] = []

  beforeAll(async () => {
    plc = await startPlcDirectory()
    plain = await startPlainPds(plc.namedUrl)
    on = { ...plain, scope: PLAIN_PDS_OAUTH_SCOPE }
  }, 120_000)
  afterEach(async () => {
    for (const clean of cleanups.splice(0).reverse()) await clean()
    on = { ...plain, scope: PLAIN_PDS_OAUTH_SCOPE }
  })
  afterAll(async () => {
    await plain?.close()
    await plc?.close()
  })

  async function seed(shape: Partial<typeof SHAPE> = {}): Promise<SeededAccount> {
    const n = ++seq
    return seedReferenceAccount(on.url, {
      ...SHAPE,
      ...shape,
      handle: `syncdrill${n}.test`,
      email: `syncdrill${n}@example.com`,
      password: `sync-drill-password-${n}`,
    })
  }

  /** The account's OAuth session at the plain PDS; requests of the NSIDs in `via` go through those proxies. */
  const signIn = (alice: SeededAccount, via: Record<string, string>) =>
    signInAt(plc.url, on, alice, () => via)

  async function destination(): Promise<DestinationServer> {
    const dest = await startDestinationServer({
      plc,
      limits: { retry: { attempts: 5, baseDelayMs: 20 } },
    })
    cleanups.push(() => dest.close())
    return dest
  }

  async function httpProxy(decide: Parameters<typeof startHttpFaultProxy>[1]): Promise<HttpFaultProxy> {
    const proxy = await startHttpFaultProxy(on.url, decide)
    cleanups.push(() => proxy.close())
    return proxy
  }

  /** The records of the source the test works on. */
  const sourceRecords = (did: string) => sourceRecordsAt(plc.url, on, did)

  /** Pulled to awaitingPlcToken, with nothing half-written; then completed with the emailed code. */
  async function completeMove(
    dest: DestinationServer,
    alice: SeededAccount,
    transferId: string,
  ): Promise<{ done: InboundTransfer; records: SourceRepo }> {
    const pulled = await dest.engine.wait(transferId)
    expect(pulled.failure).toBeUndefined()
    expect(pulled).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    await expectNothingHalfWritten(dest.store)
    const records = await sourceRecords(alice.did)
    const code = await plcCode(on, alice.did)
    expect(code).toBeDefined()
    const done = await dest.engine.complete(transferId, { plcToken: code as string })
    return { done, records }
  }

  /** `expectMoved` from the source the test works on. */
  const expectMoved = (
    opts: Omit<Parameters<typeof expectMovedFrom>[0], 'plcUrl' | 'source' | 'minRecords'>,
  ) =>
    expectMovedFrom({
      ...opts,
      plcUrl: plc.url,
      source: on,
      minRecords: SHAPE.posts + SHAPE.images + SHAPE.follows,
    })

  it('getBlob cut mid-body: the blob is fetched again, the move completes identical', async () => {
    const started = performance.now()
    const alice = await seed()
    // The first connection is cut 50 kB into its blob's body; the next ones are clean.
    const proxy = await startFaultProxy(plain.url, () =>
      proxy && proxy.applied.length > 0 ? { kind: 'none' } : { kind: 'cut', on: 'response', at: 50_000 },
    )
    cleanups.push(() => proxy.close())
    const dest = await destination()
    const client = await signIn(alice, { [SYNC('getBlob')]: proxy.url })
    const t = await dest.engine.start({ did: alice.did, client })
    expect(t.dialect).toBe('plain')
    const { done, records } = await completeMove(dest, alice, t.transferId)
    expect(proxy.applied[0]).toMatchObject({ kind: 'cut' })
    await expectMoved({ store: dest.store, destUrl: dest.url, alice, done, records })
    console.log(`drill getBlob cut: ${(performance.now() - started).toFixed(0)} ms`)
  }, 60_000)

  it('500s from getRepo, listBlobs, getBlob and getPreferences are retried, the move completes identical', async () => {
    const started = performance.now()
    const alice = await seed()
    const proxy = await httpProxy(({ nsid, n }) => {
      if (nsid === SYNC('getRepo') && n === 0) return { status: 500 }
      if (nsid === SYNC('listBlobs') && n === 0) return { status: 502 }
      if (nsid === SYNC('getBlob') && n < 3) return { status: 500 }
      if (nsid === 'app.bsky.actor.getPreferences' && n === 0) return { status: 503 }
      return undefined
    })
    const dest = await destination()
    const via = Object.fromEntries(
      [SYNC('getRepo'), SYNC('listBlobs'), SYNC('getBlob'), 'app.bsky.actor.getPreferences'].map((m) => [
        m,
        proxy.url,
      ]),
    )
    const client = await signIn(alice, via)
    const t = await dest.engine.start({ did: alice.did, client })
    const { done, records } = await completeMove(dest, alice, t.transferId)
    expect(proxy.requests.filter((r) => r.status >= 500)).toHaveLength(6)
    await expectMoved({ store: dest.store, destUrl: dest.url, alice, done, records })
    console.log(`drill 5xx: ${(performance.now() - started).toFixed(0)} ms`)
  }, 60_000)

  it('bursts of 429: Retry-After (seconds and a date) and RateLimit-Reset are waited out, the move completes identical', async () => {
    const started = performance.now()
    const alice = await seed()
    const limited = (headers: Record<string, string>): HttpFault => ({
      status: 429,
      headers,
      body: { error: 'RateLimitExceeded', message: 'Rate Limit Exceeded' },
    })
    const proxy = await httpProxy(({ nsid, n }) => {
      if (nsid === SYNC('listBlobs') && n === 0)
        return limited({ 'retry-after': new Date(Date.now() + 2_000).toUTCString() })
      if (nsid !== SYNC('getBlob')) return undefined
      if (n < 4) return limited({ 'retry-after': '1' })
      // The reference PDS's own form: RateLimit-Reset in epoch seconds, no Retry-After.
      if (n < 8) return limited({ 'ratelimit-reset': String(Math.ceil(Date.now() / 1000) + 2) })
      return undefined
    })
    const dest = await destination()
    const client = await signIn(alice, { [SYNC('listBlobs')]: proxy.url, [SYNC('getBlob')]: proxy.url })
    const t = await dest.engine.start({ did: alice.did, client })
    const { done, records } = await completeMove(dest, alice, t.transferId)
    await expectMoved({ store: dest.store, destUrl: dest.url, alice, done, records })

    const of = (m: string) => proxy.requests.filter((r) => r.nsid === SYNC(m))
    const listed = of('listBlobs')
    const listWait = (listed[1]?.at as number) - (listed[0]?.at as number)
    const blobs = of('getBlob')
    const first429 = blobs.find((r) => r.status === 429)?.at as number
    const resetBurst = blobs.find((r) => r.n >= 4)?.at as number
    const firstOk = blobs.find((r) => r.status === 200)?.at as number
    // A date in Retry-After has whole seconds: 2 s ahead is at least 1 s away.
    expect(listWait).toBeGreaterThanOrEqual(950)
    expect(resetBurst - first429).toBeGreaterThanOrEqual(950)
    expect(firstOk - resetBurst).toBeGreaterThanOrEqual(950)
    expect(blobs.filter((r) => r.status === 429)).toHaveLength(8)
    console.log(
      `drill 429: listBlobs Retry-After(date) waited ${listWait} ms; getBlob Retry-After: 1 waited ${resetBurst - first429} ms; ` +
        `RateLimit-Reset (+2 s epoch) waited ${firstOk - resetBurst} ms; whole drill ${(performance.now() - started).toFixed(0)} ms`,
    )
  }, 60_000)

  it('getRepo cut: the CAR is pulled again from the start, the move completes identical', async () => {
    const started = performance.now()
    const alice = await seed()
    // The CAR comes gzipped (about 3 kB for this account): cut 1.5 kB into the response.
    const proxy = await startFaultProxy(plain.url, () =>
      proxy && proxy.applied.length > 0 ? { kind: 'none' } : { kind: 'cut', on: 'response', at: 1_500 },
    )
    cleanups.push(() => proxy.close())
    const dest = await destination()
    const client = await signIn(alice, { [SYNC('getRepo')]: proxy.url })
    const t = await dest.engine.start({ did: alice.did, client })
    const { done, records } = await completeMove(dest, alice, t.transferId)
    expect(proxy.applied[0]).toMatchObject({ kind: 'cut' })
    expect(proxy.applied.length).toBeGreaterThan(1)
    await expectMoved({ store: dest.store, destUrl: dest.url, alice, done, records })
    console.log(`drill getRepo cut: ${(performance.now() - started).toFixed(0)} ms`)
  }, 60_000)

  it('a source that keeps failing: failed by name with resume as the way on; resumed, the move completes identical', async () => {
    const started = performance.now()
    const alice = await seed()
    const failing = await httpProxy(({ nsid, n }) =>
      nsid === SYNC('getBlob') && n >= 2 ? { status: 500 } : undefined,
    )
    const clean = await httpProxy(() => undefined)
    const dest = await destination()
    const via: Record<string, string> = { [SYNC('getBlob')]: failing.url }
    const client = await signIn(alice, via)
    const t = await dest.engine.start({ did: alice.did, client })
    const failed = await dest.engine.wait(t.transferId)
    expect(failed).toMatchObject({ status: 'failed', failure: { reason: 'SourceUnreachable' } })
    expect(failed.failure?.message).toMatch(/getBlob .*HTTP 500/)
    await expectNothingHalfWritten(dest.store)
    // The way on: this very transfer is offered for resuming, keeping what was verified.
    expect((await dest.engine.resumable(alice.did))?.transferId).toBe(t.transferId)
    const held = (dest.store.db.prepare('SELECT count(*) AS n FROM blob').get() as { n: number }).n
    expect(held).toBeGreaterThanOrEqual(2)
    expect(held).toBeLessThan(SHAPE.images)

    for (const m of ['getRepo', 'getLatestCommit', 'listBlobs', 'getBlob']) via[SYNC(m)] = clean.url
    await dest.engine.resume(t.transferId, client)
    const { done, records } = await completeMove(dest, alice, t.transferId)
    await expectMoved({ store: dest.store, destUrl: dest.url, alice, done, records })
    const calls = (m: string) => clean.requests.filter((r) => r.nsid === SYNC(m))
    expect(calls('getRepo')).toHaveLength(0)
    expect(calls('getBlob')).toHaveLength(SHAPE.images - held)
    console.log(`drill failing source + resume: ${(performance.now() - started).toFixed(0)} ms`)
  }, 60_000)

  it('blob bytes that never hash to the CID: failed BlobInvalid by name, nothing half-written, no blob of wrong bytes kept', async () => {
    const alice = await seed()
    const proxy = await httpProxy(({ nsid, n }) =>
      nsid === SYNC('getBlob') && n >= 1 ? { corruptAt: 30_000, mask: 0x10 } : undefined,
    )
    const dest = await destination()
    const client = await signIn(alice, { [SYNC('getBlob')]: proxy.url })
    const t = await dest.engine.start({ did: alice.did, client })
    const failed = await dest.engine.wait(t.transferId)
    expect(failed).toMatchObject({ status: 'failed', failure: { reason: 'BlobInvalid' } })
    expect(failed.failure?.message).toMatch(/do not hash to the CID/)
    await expectNothingHalfWritten(dest.store)
    // Not the connection's fault: not offered for resuming; a new move is the way on.
    expect(await dest.engine.resumable(alice.did)).toBeUndefined()
    expect((await dest.engine.get(t.transferId))?.status).toBe('failed')
  }, 60_000)

  it('a 429 asking for an hour: the pull does not hang, it fails by name saying how long the source asked to wait', async () => {
    const alice = await seed()
    const proxy = await httpProxy(({ nsid }) =>
      nsid === SYNC('getBlob')
        ? { status: 429, headers: { 'retry-after': '3600' }, body: { error: 'RateLimitExceeded' } }
        : undefined,
    )
    const dest = await destination()
    const client = await signIn(alice, { [SYNC('getBlob')]: proxy.url })
    const started = performance.now()
    const t = await dest.engine.start({ did: alice.did, client })
    const failed = await dest.engine.wait(t.transferId)
    const ms = performance.now() - started
    expect(failed).toMatchObject({ status: 'failed', failure: { reason: 'SourceUnreachable' } })
    console.log(`drill 429 for an hour: failed in ${ms.toFixed(0)} ms: ${failed.failure?.message}`)
    expect(ms).toBeLessThan(10_000)
    expect(failed.failure?.message).toMatch(/3600 s/)
    await expectNothingHalfWritten(dest.store)
    expect((await dest.engine.resumable(alice.did))?.transferId).toBe(t.transferId)
  }, 60_000)

  it('into the reference PDS: a getBlob cut, 429s and a 500 on getRepo; the records verify with the key PLC names after the move', async () => {
    const started = performance.now()
    const alice = await seed()
    const b = await startReferencePds(plc)
    cleanups.push(() => b.close())
    const common = {
      sink: b.sink,
      store: new SqliteInboundTransferStore(':memory:'),
      resolver: new PlcDidResolver(plc.url),
      serviceUrl: b.url,
    }
    const engine = new TransferEngine({
      ...common,
      keys: b.keys,
      plc: new plcLib.Client(plc.url),
      rotationKey: b.pds.ctx.plcRotationKey.did(),
      limits: { retry: { attempts: 5, baseDelayMs: 20 } },
    })
    cleanups.push(() => engine.close())
    const cut = await startFaultProxy(plain.url, () =>
      cut && cut.applied.length > 0 ? { kind: 'none' } : { kind: 'cut', on: 'response', at: 50_000 },
    )
    cleanups.push(() => cut.close())
    const proxy = await startHttpFaultProxy(cut.url, ({ nsid, n }) => {
      if (nsid === SYNC('getRepo') && n === 0) return { status: 500 }
      if (nsid === SYNC('getBlob') && n >= 1 && n < 3)
        return { status: 429, headers: { 'retry-after': '1' }, body: { error: 'RateLimitExceeded' } }
      return undefined
    })
    cleanups.push(() => proxy.close())
    const client = await signIn(alice, { [SYNC('getRepo')]: proxy.url, [SYNC('getBlob')]: proxy.url })
    const t = await engine.start({ did: alice.did, client })
    const pulled = await engine.wait(t.transferId)
    expect(pulled.failure).toBeUndefined()
    expect(pulled).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    const dataDir = dirname(join((b.pds.ctx.cfg.blobstore as { location: string }).location))
    const halfWritten = async () => {
      const staging = await readdir(join(dataDir, 'transfer-staging')).catch(() => [])
      const tmpRoot = dirname(dirname((b.pds.ctx.blobstore(alice.did) as DiskBlobStore).getTmpPath('x')))
      const temps: string[] = []
      for (const d of await readdir(tmpRoot).catch(() => []))
        for (const f of await readdir(join(tmpRoot, d)).catch(() => []))
          if (f.startsWith('transfer-')) temps.push(f)
      return [...staging, ...temps]
    }
    expect(await halfWritten()).toEqual([])
    const source = await sourceRecords(alice.did)
    const done = await engine.complete(t.transferId, {
      plcToken: (await plain.plcToken(alice.did)) as string,
    })
    expect(done.failure).toBeUndefined()
    expect(done).toMatchObject({ status: 'completed', stage: 'activated' })
    expect(cut.applied[0]).toMatchObject({ kind: 'cut' })
    expect(proxy.requests.filter((r) => r.status === 429)).toHaveLength(2)

    // B serves the account: its repo verifies with the key PLC now names (B re-signed the head).
    const doc = await new plcLib.Client(plc.url).getDocumentData(alice.did)
    expect(doc.services.atproto_pds?.endpoint).toBe(b.url)
    expect(doc.verificationMethods.atproto).toBe(done.signingKey)
    expect(doc.verificationMethods.atproto).not.toBe(source.key)
    const car = await fetch(`${b.url}/xrpc/com.atproto.sync.getRepo?did=${alice.did}`)
    expect(car.status).toBe(200)
    const here = await recordsOf(
      new Uint8Array(await car.arrayBuffer()),
      alice.did,
      doc.verificationMethods.atproto as string,
    )
    expect([...here].sort()).toEqual([...source.records].sort())
    for (const [cid, bytes] of alice.blobs) {
      const res = await fetch(`${b.url}/xrpc/com.atproto.sync.getBlob?did=${alice.did}&cid=${cid}`)
      expect(Buffer.from(await res.arrayBuffer()).equals(bytes), `blob ${cid} byte-identical`).toBe(true)
    }
    const held = new ReferencePdsSource(b.pds.ctx)
    expect(await held.getPreferences(alice.did)).toEqual(alice.preferences)
    const account = await b.pds.ctx.accountManager.getAccount(alice.did as `did:plc:${string}`)
    expect(account?.email).toBe(`${alice.handle.split('.')[0]}@example.com`)
    expect(await halfWritten()).toEqual([])
    console.log(`drill into the reference PDS: ${(performance.now() - started).toFixed(0)} ms`)
  }, 90_000)

  /**
   * The destination in its own process, SIGKILLed while the requests `held` chooses stop
   * `holdAfter` bytes into their bodies, once `halfWritten(dir)` finds something half-written;
   * then started again on the same directory and port (`recover()`), and the move completed.
   */
  async function killDrill(opts: {
    alice: SeededAccount
    held: (nsid: string, n: number) => boolean
    holdAfter: number
    halfWritten: (dir: string) => Promise<number>
    /** Also wait for this before the kill (e.g. every blob asked for). */
    asked?: (proxy: HttpFaultProxy) => boolean
  }) {
    const { alice } = opts
    let release: () => void = () => {}
    const released = new Promise<void>((resolve) => {
      release = resolve
    })
    let holding = true
    const proxy = await httpProxy(({ nsid, n }) =>
      holding && opts.held(nsid, n) ? { holdAfter: opts.holdAfter, until: released } : undefined,
    )
    cleanups.push(async () => release())
    const dir = await mkdtemp(join(tmpdir(), 'sync-drill-dest-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const port = await freePort()
    const env = destinationProcessEnv({ plcUrl: plc.url, dir, port, source: on, alice, via: proxy.url })
    const first = ChildPeer.fork<{ url: string }>(DESTINATION_SCRIPT, env)
    let transferId: string
    let halfWrittenAtKill = 0
    try {
      await first.ready
      transferId = (await first.call<InboundTransfer>({ start: alice.did })).transferId
      for (let i = 0; i < 400 && (halfWrittenAtKill === 0 || !(opts.asked?.(proxy) ?? true)); i++) {
        await new Promise((r) => setTimeout(r, 25))
        halfWrittenAtKill = await opts.halfWritten(dir)
      }
      if (halfWrittenAtKill === 0)
        expect.fail(`nothing half-written: ${JSON.stringify(await first.call({ wait: transferId }))}`)
    } finally {
      await first.kill()
    }
    holding = false
    release()

    const second = ChildPeer.fork<{ url: string; recovered: InboundTransfer[] }>(DESTINATION_SCRIPT, env)
    cleanups.push(() => second.kill())
    const { url, recovered } = await second.ready
    expect(recovered.map((t) => t.transferId)).toEqual([transferId])
    const pulled = await second.call<InboundTransfer>({ wait: transferId })
    expect(pulled.failure).toBeUndefined()
    expect(pulled).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    const records = await sourceRecords(alice.did)
    const code = await plcCode(on, alice.did)
    const done = await second.call<InboundTransfer>({ complete: transferId, plcToken: code })
    const landed = await SqliteAccountStore.open(dir)
    try {
      await expectMoved({ store: landed, destUrl: url, alice, done, records })
    } finally {
      landed.close()
    }
    return { proxy, halfWrittenAtKill }
  }

  it('the destination SIGKILLed mid-blob and started again on the same data: recover() resumes, the move completes identical', async () => {
    const started = performance.now()
    const alice = await seed()
    // Two blobs pass; every later one stops 40 kB into its body while the destination is killed,
    // once temporary blob files hold some of their bytes.
    const { proxy, halfWrittenAtKill } = await killDrill({
      alice,
      held: (nsid, n) => nsid === SYNC('getBlob') && n >= 2,
      holdAfter: 40_000,
      halfWritten: async (dir) =>
        (await readdir(join(dir, 'blobs'))).filter((f) => f.startsWith('.incoming-')).length,
      asked: (proxy) => proxy.requests.filter((r) => r.nsid === SYNC('getBlob')).length === SHAPE.images,
    })
    // Blobs committed before the kill were not asked for again.
    // (4 at a time: 2 done, 4 held at the kill; the restarted one asks for those 4 only.)
    const blobAsks = proxy.requests.filter((r) => r.nsid === SYNC('getBlob'))
    expect(new Set(blobAsks.map((r) => r.query.get('cid'))).size).toBe(SHAPE.images)
    expect(blobAsks).toHaveLength(2 * SHAPE.images - 2)
    console.log(
      `drill SIGKILL mid-blob: ${halfWrittenAtKill} temporary blob files at the kill; ${blobAsks.length} getBlob asks for ${SHAPE.images} blobs; ${(performance.now() - started).toFixed(0)} ms`,
    )
  }, 90_000)

  /** A source serving only the current draft (our reference-PDS adapter), closed after the test. */
  async function draftSource(capabilities?: string[]): Promise<DrillSource> {
    const dir = await mkdtemp(join(tmpdir(), 'sync-drill-draft-'))
    const pds = await startTransferPds({
      dataDir: dir,
      port: await freePort(),
      plcUrl: plc.namedUrl,
      env: { bskyAppViewUrl: 'http://127.0.0.1:9', bskyAppViewDid: 'did:web:appview.invalid' },
      sourceDialects: ['draft'],
      ...(capabilities && { draftCapabilities: capabilities }),
    })
    cleanups.push(async () => {
      await pds.close()
      await rm(dir, { recursive: true, force: true })
    })
    return { url: pds.url, pds: pds.pds, scope: DRAFT_OAUTH_SCOPE }
  }

  /**
   * A draft pull whose getBlob fails from the third blob on until the attempts are spent, then
   * resumed through a clean proxy and completed. Returns the clean proxy's requests.
   */
  async function draftFailThenResume(capabilities?: string[]) {
    on = await draftSource(capabilities)
    const alice = await seed()
    const failing = await httpProxy(({ nsid, n }) =>
      nsid === SYNC('getBlob') && n >= 2 ? { status: 500 } : undefined,
    )
    const clean = await httpProxy(() => undefined)
    const dest = await destination()
    const via: Record<string, string> = { [NSID.exportAccount]: clean.url, [SYNC('getBlob')]: failing.url }
    const client = await signIn(alice, via)
    const t = await dest.engine.start({ did: alice.did, client })
    expect(t.dialect).toBe('draft')
    const failed = await dest.engine.wait(t.transferId)
    expect(failed).toMatchObject({ status: 'failed', failure: { reason: 'SourceUnreachable' } })
    await expectNothingHalfWritten(dest.store)
    expect((await dest.engine.resumable(alice.did))?.transferId).toBe(t.transferId)
    const held = (dest.store.db.prepare('SELECT count(*) AS n FROM blob').get() as { n: number }).n
    expect(held).toBe(2)

    for (const m of ['getRepo', 'getLatestCommit', 'listBlobs', 'getBlob']) via[SYNC(m)] = clean.url
    await dest.engine.resume(t.transferId, client)
    const { done, records } = await completeMove(dest, alice, t.transferId)
    const base = capabilities?.includes('preferences') === false
    await expectMoved({
      store: dest.store,
      destUrl: dest.url,
      alice,
      done,
      records,
      ...(base && { preferences: [] }),
    })
    const calls = (m: string) => clean.requests.filter((r) => r.nsid === m)
    expect(calls(SYNC('getRepo'))).toHaveLength(0)
    expect(calls(SYNC('getBlob'))).toHaveLength(SHAPE.images - held)
    return { calls }
  }

  it('draft: a source that keeps failing mid-blobs, resumed: exportAccount repeated (resumable), only the missing blobs fetched, moved identical', async () => {
    const started = performance.now()
    const { calls } = await draftFailThenResume()
    expect(calls(NSID.exportAccount)).toHaveLength(2)
    console.log(`drill draft fail + resume (resumable): ${(performance.now() - started).toFixed(0)} ms`)
  }, 90_000)

  it('draft, base only: resumed without exportAccount again, blobs listed from the start, held ones skipped, moved identical', async () => {
    const started = performance.now()
    const { calls } = await draftFailThenResume(['base'])
    expect(calls(NSID.exportAccount)).toHaveLength(1)
    expect(calls(SYNC('listBlobs'))[0]?.query.get('cursor')).toBeNull()
    console.log(`drill draft fail + resume (base): ${(performance.now() - started).toFixed(0)} ms`)
  }, 90_000)

  it('draft: the destination SIGKILLed mid-blob and restarted: recover() resumes the draft pull, moved identical', async () => {
    const started = performance.now()
    on = await draftSource()
    const alice = await seed()
    const { proxy, halfWrittenAtKill } = await killDrill({
      alice,
      held: (nsid, n) => nsid === SYNC('getBlob') && n >= 2,
      holdAfter: 40_000,
      halfWritten: async (dir) =>
        (await readdir(join(dir, 'blobs'))).filter((f) => f.startsWith('.incoming-')).length,
      asked: (proxy) => proxy.requests.filter((r) => r.nsid === SYNC('getBlob')).length === SHAPE.images,
    })
    // The restarted destination restores its stored session: its first request learns the
    // server's DPoP nonce (401 use_dpop_nonce, sent again by the OAuth client), not a repeat.
    const exports = proxy.requests.filter((r) => r.nsid === NSID.exportAccount)
    expect(exports.filter((r) => r.status === 200)).toHaveLength(2)
    expect(exports.filter((r) => r.status !== 200).map((r) => r.status)).toEqual(
      exports.length > 2 ? [401] : [],
    )
    const blobAsks = proxy.requests.filter((r) => r.nsid === SYNC('getBlob'))
    expect(blobAsks).toHaveLength(2 * SHAPE.images - 2)
    console.log(
      `drill draft SIGKILL mid-blob: ${halfWrittenAtKill} temporary blob files at the kill; ${(performance.now() - started).toFixed(0)} ms`,
    )
  }, 90_000)

  it('the destination SIGKILLed mid-getRepo with blocks staged: recover() discards them, pulls the CAR again, the move completes identical', async () => {
    const started = performance.now()
    // Enough posts for a CAR over one 64 KiB staging batch.
    const alice = await seed({ posts: 600 })
    const { proxy, halfWrittenAtKill } = await killDrill({
      alice,
      held: (nsid, n) => nsid === SYNC('getRepo') && n === 0,
      holdAfter: 100_000,
      halfWritten: async (dir) => {
        const db = new Database(join(dir, 'store.sqlite'), { readonly: true, fileMustExist: true })
        try {
          return (db.prepare('SELECT count(*) FROM staged_block').pluck().get() as number) ?? 0
        } catch {
          return 0
        } finally {
          db.close()
        }
      },
    })
    expect(proxy.requests.filter((r) => r.nsid === SYNC('getRepo'))).toHaveLength(2)
    console.log(
      `drill SIGKILL mid-getRepo: ${halfWrittenAtKill} staged blocks at the kill; ${(performance.now() - started).toFixed(0)} ms`,
    )
  }, 90_000)
})

/**
 * The guard the SIGKILL drill needed (`AccountSink.sweepUnfinished`, run by `recover()`): what a
 * dead writer left is removed; what a live one is writing is not (several workers may share a
 * sink), in the SQLite test PDS and in the reference PDS.
 */
describe('sweeping what a killed writer left', () => {
  const blob = {
    cid: 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku',
    bytes: Buffer.from('hello world'),
  }
  const block = { cid: new Uint8Array(CID.parse(blob.cid).bytes), bytes: new Uint8Array(blob.bytes) }

  /** A pid that was a process a moment ago and is gone now. */
  async function deadPid(): Promise<number> {
    const child = spawn(process.execPath, ['-e', ''])
    await new Promise((resolve) => child.once('exit', resolve))
    return child.pid as number
  }

  /** Starts a live blob upload and a live staging in `sink`, to be left alone by a sweep. */
  async function liveWrites(sink: AccountSink) {
    const upload = await sink.startBlob('did:plc:sweeplive', blob.cid, 2 * blob.bytes.length)
    await upload.write(blob.bytes)
    const staging = await sink.stageRepo('did:plc:sweeplive')
    await staging.put([block])
    return { upload, staging }
  }

  it('the SQLite test PDS', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sync-drill-sweep-'))
    const store = await SqliteAccountStore.open(dir)
    try {
      const sink = new SqliteAccountSink(store)
      const live = await liveWrites(sink)
      const dead = await deadPid()
      await writeFile(join(dir, 'blobs', `.incoming-${dead}-0a1b`), 'half a blob')
      store.db
        .prepare('INSERT INTO staged_block (stage, cid, bytes) VALUES (?, ?, ?)')
        .run(`${dead}-0a1b`, block.cid, block.bytes)
      const incoming = async () =>
        (await readdir(join(dir, 'blobs'))).filter((f) => f.startsWith('.incoming-'))
      expect(await incoming()).toHaveLength(2)

      expect(await sink.sweepUnfinished()).toBe(2)
      expect(await incoming()).toHaveLength(1)
      expect(store.db.prepare('SELECT DISTINCT stage FROM staged_block').pluck().all()).toEqual([
        expect.stringMatching(new RegExp(`^${process.pid}-`)),
      ])
      // The live ones still complete.
      await live.upload.write(blob.bytes)
      await live.upload.commit()
      expect(await live.staging.get(block.cid)).toEqual(block.bytes)
      await live.staging.discard()
      expect(await sink.sweepUnfinished()).toBe(0)
    } finally {
      store.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('the reference PDS', async () => {
    const plc = await startPlcDirectory()
    const b = await startReferencePds(plc)
    try {
      const live = await liveWrites(b.sink)
      const stagingDir = dirname((live.staging as RepoStagingFile).path)
      const tmpDir = dirname((b.pds.ctx.blobstore('did:plc:sweeplive') as DiskBlobStore).getTmpPath('x'))
      const dead = await deadPid()
      await mkdir(tmpDir, { recursive: true })
      await writeFile(join(tmpDir, `transfer-${dead}-0a1b`), 'half a blob')
      await writeFile(join(tmpDir, 'not-ours'), 'the PDS’s own upload')
      await writeFile(join(stagingDir, `${dead}-0a1b.sqlite`), '')
      await writeFile(join(stagingDir, `${dead}-0a1b.sqlite-wal`), '')
      const before = { tmp: await readdir(tmpDir), staging: await readdir(stagingDir) }

      expect(await b.sink.sweepUnfinished?.()).toBe(3)
      const after = { tmp: await readdir(tmpDir), staging: await readdir(stagingDir) }
      expect(after.tmp.sort()).toEqual(before.tmp.filter((f) => !f.includes(`-${dead}-`)).sort())
      expect(after.tmp).toContain('not-ours')
      expect(after.tmp.some((f) => f.startsWith(`transfer-${process.pid}-`))).toBe(true)
      expect(after.staging.sort()).toEqual(before.staging.filter((f) => !f.startsWith(`${dead}-`)).sort())
      expect(after.staging.some((f) => f.startsWith(`${process.pid}-`))).toBe(true)
      await live.upload.abort()
      await live.staging.discard()
    } finally {
      await b.close()
      await plc.close()
    }
  }, 60_000)
})
