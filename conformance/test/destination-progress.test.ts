import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { NSID } from '@pds-transfer/core'
import {
  bearerSourceClient,
  type InboundTransfer,
  type SourceClient,
  type TransferProgress,
} from '@pds-transfer/destination'
import type { AccountSource } from '@pds-transfer/source'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { rawFrames } from '../src/harness/crafted-source.ts'
import {
  type DestinationServer,
  freePort,
  startDestinationServer,
} from '../src/harness/destination-server.ts'
import { overrideSource } from '../src/harness/override-source.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import type { SqliteAccountStore } from '../src/store/sqlite-account-store.ts'

const SCOPES = [NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus, 'com.atproto.sync.getBlob']
const BLOBS = 5
/** Enough attempts for three cut sessions and the one that gets through. */
const LIMITS = { retry: { attempts: 5, baseDelayMs: 20 } }

/** The progress during an export session, beside what the destination then held. */
interface Sample {
  session: number
  blobsReceived: number
  blobsHeld: number
}

/**
 * Issue 16: getTransferStatus counted every blob of every export session, so three attempts on
 * a 5-blob account said 15. Progress counts what the destination holds, each unit once, over
 * retries that start over (a literal 0014 source), resumed sessions, and a restart.
 */
describe('progress counts what the destination holds, once', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let literalSource: SourceServer
  let dest: DestinationServer
  let resumable: FixtureAccount
  let literal: FixtureAccount
  /** Progress of an uninterrupted transfer of each account. */
  const clean = new Map<string, InboundTransfer>()
  /** While set, the literal source's read of the last blob waits for it (a stream still running). */
  let hold: Promise<void> | undefined
  let blobReads = 0

  const holding = (store: SqliteAccountStore): AccountSource =>
    overrideSource(store, {
      async openBlob(did, cid) {
        if (hold && ++blobReads >= BLOBS) await hold
        return store.openBlob(did, cid)
      },
    })

  const account = (on: SourceServer) =>
    buildAccount(on.store, {
      plcUrl: plcDir.url,
      pdsUrl: on.url,
      pdsRotationKey: on.rotationKey,
      shape: { posts: 20, blobSizes: Array.from({ length: BLOBS }, (_, i) => 30_000 + i * 333) },
    })

  const clientFor = (on: SourceServer, did: string, to: DestinationServer) =>
    bearerSourceClient(on.url, on.auth.issue({ did, clientId: to.clientId }, SCOPES))

  /** Forgets the account's repo and blobs at `dest`, so that the next run starts from nothing. */
  const wipe = (did: string) => {
    dest.store.db.prepare('DELETE FROM repo_root WHERE did = ?').run(did)
    dest.store.db.prepare('DELETE FROM blob WHERE did = ?').run(did)
  }

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    // One blob per blobpack: a cut between packs leaves some blobs held and some not.
    source = await startSourceServer({ plc: plcDir, blobpackTarget: 16 * 1024 })
    literalSource = await startSourceServer({
      plc: plcDir,
      blobpackTarget: 16 * 1024,
      extensions: [],
      wrapSource: holding,
    })
    dest = await startDestinationServer({ plc: plcDir, limits: LIMITS })
    resumable = await account(source)
    literal = await account(literalSource)
    for (const [on, a] of [
      [source, resumable],
      [literalSource, literal],
    ] as const) {
      const t = await dest.engine.wait(
        (await dest.engine.start({ did: a.did, client: clientFor(on, a.did, dest) })).transferId,
      )
      expect(t).toMatchObject({ stage: 'awaitingPlcToken', progress: { blobsReceived: BLOBS } })
      clean.set(a.did, t)
      wipe(a.did)
    }
  }, 60_000)

  afterAll(async () => {
    await dest?.close()
    await source?.close()
    await literalSource?.close()
    await plcDir?.close()
  })

  const blobsHeld = async (to: DestinationServer, a: FixtureAccount) => {
    let n = 0
    for (const cid of a.blobs.keys()) if (await to.sink.hasBlob(a.did, cid)) n++
    return n
  }

  /**
   * The real client, except that the n-th export response is cut inside the frame after its
   * first `keep[n]` frames (a reset connection). Each response is handed over in small slices,
   * and the progress is sampled before each session and before each slice.
   */
  function cuttingClient(
    inner: SourceClient,
    to: DestinationServer,
    a: FixtureAccount,
    keep: number[],
    samples: Sample[],
  ): SourceClient {
    let sessions = 0
    return {
      url: inner.url,
      async fetch(path, init) {
        if (path !== `/xrpc/${NSID.exportAccount}`) return inner.fetch(path, init)
        const { transferId } = JSON.parse(String(init?.body)) as { transferId: string }
        const session = sessions++
        const sample = async () => {
          const t = await to.engine.get(transferId)
          samples.push({
            session,
            blobsReceived: t?.progress.blobsReceived ?? 0,
            blobsHeld: await blobsHeld(to, a),
          })
        }
        await sample()
        const res = await inner.fetch(path, init)
        if (!res.ok || !res.body) return res
        const all = Buffer.from(await res.arrayBuffer())
        let end = all.length
        const k = keep[session]
        if (k !== undefined) {
          const frames = await rawFrames([all])
          const next = frames[k]
          if (!next) throw new Error(`session ${session} has only ${frames.length} frames`)
          end = frames.slice(0, k).reduce((n, f) => n + f.bytes.length, 0) + Math.floor(next.bytes.length / 2)
        }
        let at = 0
        const body = new ReadableStream<Uint8Array>({
          async pull(controller) {
            await sample()
            if (at >= end) return controller.close()
            controller.enqueue(all.subarray(at, Math.min(end, at + 8192)))
            at += 8192
          },
        })
        return new Response(body, { status: res.status, headers: res.headers })
      },
    }
  }

  /**
   * The count never passes what is held nor goes back, and at the start of each session it is
   * what is held (`starts`, one per session).
   */
  function expectHeldCounts(samples: Sample[], starts: number[]) {
    for (const [i, s] of samples.entries()) {
      expect(s.blobsReceived, `sample ${i}`).toBeLessThanOrEqual(s.blobsHeld)
      expect(s.blobsReceived, `sample ${i}`).toBeGreaterThanOrEqual(samples[i - 1]?.blobsReceived ?? 0)
    }
    const first = starts.map((_, session) => samples.find((s) => s.session === session))
    expect(first.map((s) => s && { blobsReceived: s.blobsReceived, blobsHeld: s.blobsHeld })).toEqual(
      starts.map((n) => ({ blobsReceived: n, blobsHeld: n })),
    )
  }

  /** The counters a status shows, to compare a run with the uninterrupted one. */
  const counters = (p: TransferProgress) => ({
    framesReceived: p.framesReceived,
    bytesReceived: p.bytesReceived,
    blobsReceived: p.blobsReceived,
    blobsReconciled: p.blobsReconciled,
  })

  it('a source that starts over after each of three cuts: each blob counted once', async () => {
    const samples: Sample[] = []
    // Cut inside the 2nd, 3rd and 4th blobpack: 1, then 2, then 3 blobs held before the next try.
    const client = cuttingClient(
      clientFor(literalSource, literal.did, dest),
      dest,
      literal,
      [2, 3, 4],
      samples,
    )
    const t = await dest.engine.wait((await dest.engine.start({ did: literal.did, client })).transferId)
    wipe(literal.did)
    expect(t.failure).toBeUndefined()
    expect(t).toMatchObject({ stage: 'awaitingPlcToken', endOfStream: 'unverified', retry: { attempt: 3 } })
    expectHeldCounts(samples, [0, 1, 2, 3])
    expect(counters(t.progress)).toEqual(counters((clean.get(literal.did) as InboundTransfer).progress))
  })

  it('resumed sessions after three cuts: each blob counted once, the size hint too', async () => {
    const samples: Sample[] = []
    // Each resumed session starts after the last blob held, and is cut inside its second frame.
    const client = cuttingClient(clientFor(source, resumable.did, dest), dest, resumable, [2, 1, 1], samples)
    const t = await dest.engine.wait((await dest.engine.start({ did: resumable.did, client })).transferId)
    wipe(resumable.did)
    expect(t.failure).toBeUndefined()
    // Each cut came after a newly held blob, so none used up an attempt (decision D25).
    expect(t).toMatchObject({ stage: 'awaitingPlcToken', endOfStream: 'manifest', retry: { attempt: 1 } })
    expectHeldCounts(samples, [0, 1, 2, 3])
    const reference = clean.get(resumable.did) as InboundTransfer
    // Each session ends with its own manifest, whose counters encode in a byte or two more or less.
    const { bytesReceived, ...rest } = counters(t.progress)
    const { bytesReceived: referenceBytes, ...referenceRest } = counters(reference.progress)
    expect(rest).toEqual(referenceRest)
    expect(Math.abs(bytesReceived - referenceBytes)).toBeLessThan(16)
    // The hint leaves out blobpack headers, which the held bytes include (a few per pack).
    expect(t.expected?.blobs).toBe(BLOBS)
    expect(Math.abs((t.expected?.bytes ?? 0) - (reference.expected?.bytes ?? 0))).toBeLessThan(64)
  })

  it('a restart that starts the export over: the counts are not added to what was recorded', async () => {
    const a = await account(literalSource)
    const dirs = [await mkdtemp(join(tmpdir(), 'pds-transfer-progress-'))]
    // One port, so one OAuth client for the source: each export supersedes the last one.
    const port = await freePort()
    let client: SourceClient | undefined
    const live = new Set<DestinationServer>()
    const open = async (dir: string) => {
      const server = await startDestinationServer({
        plc: plcDir,
        limits: LIMITS,
        dir,
        port,
        restoreClient: async () => client,
      })
      live.add(server)
      return server
    }
    const close = async (server: DestinationServer) => {
      live.delete(server)
      await server.close()
    }
    let release = () => {}
    try {
      dirs.push(await mkdtemp(join(tmpdir(), 'pds-transfer-progress-')))
      const reference = await open(dirs[1] as string)
      const full = await reference.engine.wait(
        (await reference.engine.start({ did: a.did, client: clientFor(literalSource, a.did, reference) }))
          .transferId,
      )
      await close(reference)
      expect(full.progress.blobsReceived).toBe(BLOBS)

      hold = new Promise((resolve) => {
        release = resolve
      })
      blobReads = 0
      const first = await open(dirs[0] as string)
      client = clientFor(literalSource, a.did, first)
      const started = await first.engine.start({ did: a.did, client })
      // Stopped while the source holds back the last blob: some are held and recorded, not all.
      let before: InboundTransfer | undefined
      for (let i = 0; i < 400 && (before?.progress.blobsReceived ?? 0) < 1; i++) {
        await new Promise((r) => setTimeout(r, 25))
        before = await first.engine.get(started.transferId)
      }
      expect(before?.progress.blobsReceived).toBeGreaterThanOrEqual(1)
      expect(before?.progress.blobsReceived).toBeLessThan(BLOBS)
      await close(first)
      hold = undefined
      release()

      const second = await open(dirs[0] as string)
      expect((await second.engine.recover()).map((t) => t.transferId)).toEqual([started.transferId])
      const t = await second.engine.wait(started.transferId)
      expect(t.failure).toBeUndefined()
      expect(t.stage).toBe('awaitingPlcToken')
      expect(await blobsHeld(second, a)).toBe(BLOBS)
      expect(counters(t.progress)).toEqual(counters(full.progress))
    } finally {
      hold = undefined
      release()
      for (const server of live) await close(server)
      for (const dir of dirs) await rm(dir, { recursive: true, force: true })
    }
  })
})
