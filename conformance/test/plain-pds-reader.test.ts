import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CarReader } from '@ipld/car'
import { ReferencePdsSource } from '@pds-transfer/atproto-pds'
import {
  type PlainPdsPullResult,
  PlainPdsReader,
  type PlainPdsReaderOptions,
  PlcDidResolver,
  type SourceClient,
  SqliteInboundTransferStore,
} from '@pds-transfer/destination'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { create as createDigest } from 'multiformats/hashes/digest'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { type FaultProxy, startFaultProxy } from '../src/harness/fault-proxy.ts'
import { type HttpFault, type HttpFaultProxy, startHttpFaultProxy } from '../src/harness/http-fault-proxy.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { oauthSourceClient } from '../src/harness/plain-pds-oauth.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { startReferencePds } from '../src/harness/reference-pds.ts'
import { SqliteAccountSink } from '../src/store/sqlite-account-sink.ts'
import { SqliteAccountStore } from '../src/store/sqlite-account-store.ts'

const IMAGES = 12
const IMAGE_BYTES = 300 * 1024

/**
 * The plain-PDS reader against a real `@atproto/pds` with nothing of ours in front: the
 * account's repo (getRepo), blobs (listBlobs ∪ record refs, getBlob) and preferences
 * (getPreferences) land in the SQLite test PDS verified, byte-identical and deactivated; every
 * fault on the sync path ends identical after retry or resume, or failed by name with nothing
 * half-written.
 */
describe('plain-PDS reader', () => {
  let plc: PlcDirectory
  let plain: { url: string; close(): Promise<void> }
  let alice: SeededAccount
  /** Records in alice's repo at the source (the last test writes one more). */
  let records = 300 + IMAGES + 40
  const cleanups: (() => Promise<void>)[] = []

  beforeAll(async () => {
    plc = await startPlcDirectory()
    plain = await startPlainPds(plc.namedUrl)
    alice = await seedReferenceAccount(plain.url, {
      handle: 'plain-alice.test',
      email: 'plain-alice@example.com',
      password: 'plain-alice-password-1',
      posts: 300,
      images: IMAGES,
      imageBytes: IMAGE_BYTES,
      follows: 40,
    })
  }, 180_000)
  afterEach(async () => {
    for (const clean of cleanups.splice(0)) await clean()
  })
  afterAll(async () => {
    await plain?.close()
    await plc?.close()
  })

  /** A fresh SQLite test PDS as destination, with its transfer store and a reader. */
  async function destination(options: Partial<PlainPdsReaderOptions> = {}) {
    const dir = await mkdtemp(join(tmpdir(), 'plain-reader-dest-'))
    const store = await SqliteAccountStore.open(dir)
    const sink = new SqliteAccountSink(store)
    const transfers = new SqliteInboundTransferStore(':memory:')
    const reader = new PlainPdsReader({
      sink,
      store: transfers,
      resolver: new PlcDidResolver(plc.url),
      serviceUrl: 'http://localhost:1',
      limits: { retry: { attempts: 4, baseDelayMs: 20 } },
      ...options,
    })
    cleanups.push(async () => {
      store.close()
      await rm(dir, { recursive: true, force: true })
    })
    return { store, sink, transfers, reader }
  }
  type Destination = Awaited<ReturnType<typeof destination>>

  /**
   * The account's session at the plain PDS, as the destination would hold it; calls named in
   * `via` go through that base URL (a fault proxy) instead.
   */
  function client(via: Record<string, string> = {}): SourceClient {
    return {
      url: plain.url,
      fetch: (path, init = {}) => {
        const nsid = path.slice('/xrpc/'.length).split('?')[0] as string
        const headers = new Headers(init.headers)
        headers.set('authorization', `Bearer ${alice.accessJwt}`)
        return fetch(`${via[nsid] ?? plain.url}${path}`, { ...init, headers })
      },
    }
  }

  async function httpProxy(decide: Parameters<typeof startHttpFaultProxy>[1]): Promise<HttpFaultProxy> {
    const proxy = await startHttpFaultProxy(plain.url, decide)
    cleanups.push(() => proxy.close())
    return proxy
  }

  async function tcpProxy(plan: Parameters<typeof startFaultProxy>[1]): Promise<FaultProxy> {
    const proxy = await startFaultProxy(plain.url, plan)
    cleanups.push(() => proxy.close())
    return proxy
  }

  async function move(dest: Destination, source: SourceClient): Promise<PlainPdsPullResult> {
    const t = await dest.reader.start({ did: alice.did, client: source })
    return dest.reader.pull(t.transferId, source)
  }

  /** No staged blocks and no temporary blob files: a failed unit left nothing behind. */
  async function expectNothingHalfWritten(dest: Destination): Promise<void> {
    expect(dest.store.db.prepare('SELECT count(*) AS n FROM staged_block').get()).toEqual({ n: 0 })
    const files = await readdir(join(dest.store.dir, 'blobs'))
    expect(files.filter((f) => f.startsWith('.incoming-'))).toEqual([])
  }

  /** The blocks of the source's repo CAR (getRepo, unauthenticated: the account is active there), by CID. */
  async function sourceBlocks(): Promise<{ root: string; blocks: Map<string, Uint8Array> }> {
    const car = await fetch(`${plain.url}/xrpc/com.atproto.sync.getRepo?did=${alice.did}`)
    return carBlocks(new Uint8Array(await car.arrayBuffer()))
  }

  /** Both ends hold the same repo blocks, blobs and preferences; the account is deactivated here. */
  async function expectIdentical(
    dest: Destination,
    result: PlainPdsPullResult,
    missing: string[] = [],
  ): Promise<void> {
    expect(result.transfer.failure).toBeUndefined()
    expect(result.transfer).toMatchObject({
      status: 'importing',
      stage: 'awaitingPlcToken',
      missingBlobs: missing,
    })
    const { root, blocks: source } = await sourceBlocks()
    const rows = dest.store.db.prepare('SELECT cid, bytes FROM repo_block WHERE did = ?').all(alice.did) as {
      cid: Uint8Array
      bytes: Uint8Array
    }[]
    const held = new Map(
      rows.map((r) => [CID.decode(new Uint8Array(r.cid)).toString(), new Uint8Array(r.bytes)]),
    )
    expect([...held.keys()].sort()).toEqual([...source.keys()].sort())
    for (const [cid, bytes] of source)
      expect(Buffer.from(held.get(cid) as Uint8Array).equals(bytes)).toBe(true)
    const head = dest.store.db.prepare('SELECT commit_cid FROM repo_root WHERE did = ?').get(alice.did) as {
      commit_cid: Uint8Array
    }
    expect(CID.decode(new Uint8Array(head.commit_cid)).toString()).toBe(root)
    expect(result.transfer.progress.records).toBe(records)

    expect(dest.store.db.prepare('SELECT count(*) AS n FROM blob WHERE did = ?').get(alice.did)).toEqual({
      n: alice.blobs.size,
    })
    for (const [cid, bytes] of alice.blobs) {
      const stored = await readFile(dest.store.blobPath(cid))
      expect(stored.equals(bytes), `blob ${cid} byte-identical`).toBe(true)
    }
    expect(await dest.store.getPreferences(alice.did)).toEqual(alice.preferences)
    expect(await dest.sink.isActive(alice.did)).toBe(false)
    await expectNothingHalfWritten(dest)
  }

  it('moves repo, blobs and preferences byte-identical, bounded to 4 blobs at a time', async () => {
    const dest = await destination()
    const proxy = await httpProxy(() => undefined)
    const hwmBefore = peakRssMiB()
    const started = performance.now()
    const result = await move(dest, client({ 'com.atproto.sync.getBlob': proxy.url }))
    const ms = performance.now() - started
    await expectIdentical(dest, result)
    expect(result.blobs).toMatchObject({
      listed: IMAGES,
      referenced: IMAGES,
      listedNotReferenced: [],
      referencedNotListed: [],
      fetched: IMAGES,
      missing: [],
    })
    expect(proxy.maxInFlight.get('com.atproto.sync.getBlob')).toBe(4)
    console.log(
      `plain pull: ${result.transfer.progress.records} records, ${IMAGES} x ${IMAGE_BYTES / 1024} KiB blobs in ${ms.toFixed(0)} ms; peak RSS of the test process (plain PDS included) ${hwmBefore} -> ${peakRssMiB()} MiB`,
    )
  })

  it('moves into the reference PDS (@atproto/pds as destination) identical and deactivated', async () => {
    const b = await startReferencePds(plc)
    cleanups.push(() => b.close())
    const reader = new PlainPdsReader({
      sink: b.sink,
      store: new SqliteInboundTransferStore(':memory:'),
      resolver: new PlcDidResolver(plc.url),
      serviceUrl: b.url,
    })
    const t = await reader.start({ did: alice.did, client: client() })
    const result = await reader.pull(t.transferId, client())
    expect(result.transfer).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    expect(result.transfer.failure).toBeUndefined()

    const held = new ReferencePdsSource(b.pds.ctx)
    const snapshot = await held.snapshotRepo(alice.did)
    const chunks: Uint8Array[] = []
    for await (const chunk of snapshot.open()) chunks.push(chunk)
    await snapshot.release()
    const there = await carBlocks(Buffer.concat(chunks))
    const here = await sourceBlocks()
    expect(there.root).toBe(here.root)
    expect([...there.blocks.keys()].sort()).toEqual([...here.blocks.keys()].sort())
    for (const [cid, bytes] of here.blocks)
      expect(Buffer.from(there.blocks.get(cid) as Uint8Array).equals(bytes)).toBe(true)
    for (const [cid, bytes] of alice.blobs) {
      const stream = await held.openBlob(alice.did, cid)
      const parts: Uint8Array[] = []
      for await (const chunk of stream ?? []) parts.push(chunk)
      expect(Buffer.concat(parts).equals(bytes), `blob ${cid} byte-identical`).toBe(true)
    }
    expect(await held.getPreferences(alice.did)).toEqual(alice.preferences)
    expect(await held.getAccount(alice.did)).toMatchObject({ status: 'deactivated' })
  })

  it('reads with an OAuth session at the plain PDS’s own provider: atproto, one rpc scope for preferences, identity:* for the code', async () => {
    const signIn = (scope: string) =>
      oauthSourceClient({
        pdsUrl: plain.url,
        plcUrl: plc.url,
        did: alice.did,
        account: { username: alice.handle, password: alice.password },
        scope,
      })
    const scope = 'atproto rpc:app.bsky.actor.getPreferences?aud=* identity:*'
    const full = await signIn(scope)
    expect(full.grantedScope.split(' ').sort()).toEqual(scope.split(' ').sort())
    const dest = await destination()
    await expectIdentical(dest, await move(dest, full.client))

    // Without identity:* the data moves, and the record says by name why no code was emailed.
    const dataOnly = await signIn('atproto rpc:app.bsky.actor.getPreferences?aud=*')
    const noCode = await destination()
    const pulled = await move(noCode, dataOnly.client)
    expect(pulled.transfer).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    expect(pulled.transfer.plcCodeRequestedAt).toBeUndefined()
    expect(pulled.transfer.failure?.message).toContain('identity:*')

    // `atproto` alone reads the repo and blobs (public while the account is active) but not the
    // preferences: the pull stops by name, the reference PDS's message naming the missing scope.
    const bare = await signIn('atproto')
    const refused = await destination()
    const result = await move(refused, bare.client)
    expect(result.transfer).toMatchObject({ status: 'failed', failure: { reason: 'SourceRefused' } })
    expect(result.transfer.failure?.message).toContain('rpc:app.bsky.actor.getPreferences')
    expect(result.blobs.fetched).toBe(IMAGES)
  })

  it('a getBlob that stalls is abandoned and fetched again', async () => {
    const dest = await destination({
      limits: { stallTimeoutMs: 300, retry: { attempts: 4, baseDelayMs: 20 } },
    })
    const proxy = await tcpProxy(() =>
      proxy && proxy.applied.length > 0
        ? { kind: 'none' }
        : { kind: 'stall', on: 'response', at: 50_000, ms: 5_000 },
    )
    const result = await move(dest, client({ 'com.atproto.sync.getBlob': proxy.url }))
    expect(proxy.applied[0]).toMatchObject({ kind: 'stall' })
    await expectIdentical(dest, result)
  })

  it('honours a configured blob parallelism', async () => {
    const dest = await destination({ blobConcurrency: 2 })
    const proxy = await httpProxy(() => undefined)
    await expectIdentical(dest, await move(dest, client({ 'com.atproto.sync.getBlob': proxy.url })))
    expect(proxy.maxInFlight.get('com.atproto.sync.getBlob')).toBe(2)
  })

  it("takes the engine's blobConcurrency limit when the reader is given none", async () => {
    const dest = await destination({
      limits: { retry: { attempts: 4, baseDelayMs: 20 }, blobConcurrency: 3 },
    })
    const proxy = await httpProxy(() => undefined)
    await expectIdentical(dest, await move(dest, client({ 'com.atproto.sync.getBlob': proxy.url })))
    expect(proxy.maxInFlight.get('com.atproto.sync.getBlob')).toBe(3)
  })

  it('getBlob cut mid-body: the blob is fetched again, nothing half-written', async () => {
    const dest = await destination()
    const proxy = await tcpProxy(() =>
      // The first connection is cut 100 kB into its first blob's body; the next ones are clean.
      proxy && proxy.applied.length > 0 ? { kind: 'none' } : { kind: 'cut', on: 'response', at: 100_000 },
    )
    const result = await move(dest, client({ 'com.atproto.sync.getBlob': proxy.url }))
    expect(proxy.applied[0]).toMatchObject({ kind: 'cut' })
    await expectIdentical(dest, result)
  })

  it('getBlob bytes that do not hash to the CID are refused and fetched again', async () => {
    const dest = await destination()
    const proxy = await httpProxy(({ nsid, n }) =>
      nsid === 'com.atproto.sync.getBlob' && n === 0 ? { corruptAt: 50_000, mask: 0x01 } : undefined,
    )
    const result = await move(dest, client({ 'com.atproto.sync.getBlob': proxy.url }))
    expect(proxy.requests.filter((r) => r.nsid === 'com.atproto.sync.getBlob')).toHaveLength(IMAGES + 1)
    await expectIdentical(dest, result)
  })

  it('a blob that never hashes to its CID fails the pull BlobInvalid', async () => {
    const dest = await destination()
    const proxy = await httpProxy(({ nsid }) =>
      nsid === 'com.atproto.sync.getBlob' ? { corruptAt: 10, mask: 0x80 } : undefined,
    )
    const result = await move(dest, client({ 'com.atproto.sync.getBlob': proxy.url }))
    expect(result.transfer).toMatchObject({ status: 'failed', failure: { reason: 'BlobInvalid' } })
    expect(dest.store.db.prepare('SELECT count(*) AS n FROM blob').get()).toEqual({ n: 0 })
    await expectNothingHalfWritten(dest)
  })

  it('a 500 from getBlob is retried', async () => {
    const dest = await destination()
    const proxy = await httpProxy(({ nsid, n }) =>
      nsid === 'com.atproto.sync.getBlob' && n < 2 ? { status: 500 } : undefined,
    )
    const result = await move(dest, client({ 'com.atproto.sync.getBlob': proxy.url }))
    expect(proxy.requests.filter((r) => r.status === 500)).toHaveLength(2)
    await expectIdentical(dest, result)
  })

  it('a burst of 429s: Retry-After and RateLimit-Reset are waited out', async () => {
    const dest = await destination()
    const proxy = await httpProxy(({ nsid, n }): HttpFault => {
      if (nsid !== 'com.atproto.sync.getBlob') return undefined
      if (n < 4) return { status: 429, headers: { 'retry-after': '1' }, body: { error: 'RateLimitExceeded' } }
      if (n < 8) {
        // The reference PDS's form: epoch seconds, no Retry-After.
        const reset = String(Math.ceil(Date.now() / 1000) + 2)
        return { status: 429, headers: { 'ratelimit-reset': reset }, body: { error: 'RateLimitExceeded' } }
      }
      return undefined
    })
    const result = await move(dest, client({ 'com.atproto.sync.getBlob': proxy.url }))
    await expectIdentical(dest, result)
    const blobs = proxy.requests.filter((r) => r.nsid === 'com.atproto.sync.getBlob')
    const first429 = blobs.find((r) => r.status === 429)?.at as number
    const secondBurst = blobs.find((r) => r.n >= 4)?.at as number
    const firstOk = blobs.find((r) => r.status === 200)?.at as number
    // Retry-After: 1 before the second burst; RateLimit-Reset (at least a second away) before any success.
    expect(secondBurst - first429).toBeGreaterThanOrEqual(950)
    expect(firstOk - secondBurst).toBeGreaterThanOrEqual(950)
  })

  it('getRepo cut: the CAR is pulled again from the start, the staging of the cut one discarded', async () => {
    const dest = await destination()
    const proxy = await tcpProxy(() =>
      proxy && proxy.applied.length > 0 ? { kind: 'none' } : { kind: 'cut', on: 'response', at: 20_000 },
    )
    const result = await move(dest, client({ 'com.atproto.sync.getRepo': proxy.url }))
    expect(proxy.applied[0]).toMatchObject({ kind: 'cut' })
    expect(proxy.applied.length).toBeGreaterThan(1)
    await expectIdentical(dest, result)
  })

  it('a getRepo CAR with a block that does not match its CID fails RepoInvalid, nothing committed', async () => {
    const dest = await destination()
    const proxy = await httpProxy(({ nsid }) =>
      nsid === 'com.atproto.sync.getRepo' ? { corruptAt: 5_000, mask: 0x01 } : undefined,
    )
    const result = await move(dest, client({ 'com.atproto.sync.getRepo': proxy.url }))
    expect(result.transfer).toMatchObject({ status: 'failed', failure: { reason: 'RepoInvalid' } })
    expect(dest.store.db.prepare('SELECT count(*) AS n FROM repo_root').get()).toEqual({ n: 0 })
    expect(dest.store.db.prepare('SELECT count(*) AS n FROM repo_block').get()).toEqual({ n: 0 })
    await expectNothingHalfWritten(dest)
  })

  it('a source that keeps failing: failed by name, then a resume fetches only what is missing', async () => {
    const dest = await destination({ listBlobsLimit: 4, limits: { retry: { attempts: 2, baseDelayMs: 20 } } })
    const failing = await httpProxy(({ nsid, n }) =>
      nsid === 'com.atproto.sync.getBlob' && n >= 5 ? { status: 500 } : undefined,
    )
    const t = await dest.reader.start({ did: alice.did, client: client() })
    const first = await dest.reader.pull(t.transferId, client({ 'com.atproto.sync.getBlob': failing.url }))
    expect(first.transfer).toMatchObject({ status: 'failed', failure: { reason: 'SourceUnreachable' } })
    expect(first.transfer.blobCursor).toBeDefined()
    await expectNothingHalfWritten(dest)
    const held = (dest.store.db.prepare('SELECT count(*) AS n FROM blob').get() as { n: number }).n
    expect(held).toBeGreaterThanOrEqual(4)
    expect(held).toBeLessThan(IMAGES)

    const clean = await httpProxy(() => undefined)
    const via = Object.fromEntries(
      ['getRepo', 'getLatestCommit', 'listBlobs', 'getBlob'].map((m) => [`com.atproto.sync.${m}`, clean.url]),
    )
    const second = await dest.reader.pull(t.transferId, client(via))
    await expectIdentical(dest, second)
    expect(second.repoFetched).toBe(false)
    const calls = (nsid: string) => clean.requests.filter((r) => r.nsid === `com.atproto.sync.${nsid}`)
    expect(calls('getRepo')).toHaveLength(0)
    expect(calls('getBlob')).toHaveLength(IMAGES - held)
    expect(calls('listBlobs')[0]?.query.get('cursor')).toBe(first.transfer.blobCursor)
  })

  it('preferences that do not validate fail the pull PreferencesInvalid', async () => {
    const dest = await destination()
    const proxy = await httpProxy(({ nsid }) =>
      nsid === 'app.bsky.actor.getPreferences'
        ? {
            rewriteJson: () => ({
              preferences: [{ $type: 'app.bsky.actor.defs#adultContentPref', enabled: 'yes' }],
            }),
          }
        : undefined,
    )
    const result = await move(dest, client({ 'app.bsky.actor.getPreferences': proxy.url }))
    expect(result.transfer).toMatchObject({ status: 'failed', failure: { reason: 'PreferencesInvalid' } })
    expect(await dest.store.getPreferences(alice.did)).toEqual([])
  })

  it('moves the union of listBlobs and the records’ refs, and reports the difference', async () => {
    const dest = await destination()
    const hidden = [...alice.blobs.keys()].sort()[3] as string
    const unknown = CID.createV1(raw.code, createDigest(0x12, createHash('sha256').update('nope').digest()))
    // The first page hides one referenced blob and lists one the source does not have.
    const withExtra = await httpProxy(({ nsid, query }) =>
      nsid === 'com.atproto.sync.listBlobs' && !query.get('cursor')
        ? {
            rewriteJson: (body) => {
              const page = body as { cids: string[]; cursor?: string }
              return { ...page, cids: [...page.cids.filter((c) => c !== hidden), unknown.toString()] }
            },
          }
        : undefined,
    )
    const result = await move(dest, client({ 'com.atproto.sync.listBlobs': withExtra.url }))
    expect(result.blobs.referencedNotListed).toEqual([hidden])
    expect(result.blobs.listedNotReferenced).toEqual([unknown.toString()])
    expect(result.blobs.missing).toEqual([{ cid: unknown.toString(), why: 'the source has no such blob' }])
    // Everything the records need arrived, the hidden blob included; the unknown one is named missing.
    await expectIdentical(dest, result, [unknown.toString()])
  })

  // Last: it writes to alice's repo at the source.
  it('a resume after the source was written to pulls the new repo and its new blob', async () => {
    const dest = await destination()
    const failing = await httpProxy(({ nsid }) =>
      nsid === 'app.bsky.actor.getPreferences' ? { status: 500 } : undefined,
    )
    const t = await dest.reader.start({ did: alice.did, client: client() })
    const first = await dest.reader.pull(
      t.transferId,
      client({ 'app.bsky.actor.getPreferences': failing.url }),
    )
    expect(first.transfer).toMatchObject({ status: 'failed', failure: { reason: 'SourceUnreachable' } })

    const png = Buffer.from(await readFile(dest.store.blobPath([...alice.blobs.keys()][0] as string)))
    png[png.length - 20] = (png[png.length - 20] as number) ^ 0xff
    const xrpc = async (nsid: string, body: Uint8Array | string, type: string) => {
      const res = await fetch(`${plain.url}/xrpc/${nsid}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${alice.accessJwt}`, 'content-type': type },
        body,
      })
      expect(res.status, await res.clone().text()).toBe(200)
      return (await res.json()) as { blob: { ref: { $link: string } } }
    }
    const { blob } = await xrpc('com.atproto.repo.uploadBlob', png, 'image/png')
    await xrpc(
      'com.atproto.repo.createRecord',
      JSON.stringify({
        repo: alice.did,
        collection: 'app.bsky.feed.post',
        record: {
          $type: 'app.bsky.feed.post',
          text: 'written during the move',
          createdAt: new Date().toISOString(),
          embed: { $type: 'app.bsky.embed.images', images: [{ image: blob, alt: 'late' }] },
        },
      }),
      'application/json',
    )
    alice.blobs.set(blob.ref.$link, png)
    records++

    const second = await dest.reader.pull(t.transferId, client())
    expect(second.repoFetched).toBe(true)
    await expectIdentical(dest, second)
  })
})

/** A CAR's root and blocks by CID string. */
async function carBlocks(bytes: Uint8Array): Promise<{ root: string; blocks: Map<string, Uint8Array> }> {
  const reader = await CarReader.fromBytes(bytes)
  const blocks = new Map<string, Uint8Array>()
  for await (const block of reader.blocks()) blocks.set(block.cid.toString(), block.bytes)
  return { root: String((await reader.getRoots())[0]), blocks }
}

/** Peak resident memory of this process so far (`VmHWM`), in MiB. */
function peakRssMiB(): number {
  const status = readFileSync('/proc/self/status', 'utf8')
  return Math.round(Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024)
}
