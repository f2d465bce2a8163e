import { CONTENT_TYPE, EXTENSION, NSID } from '@pds-transfer/core'
import { bearerSourceClient, type SourceClient } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { rawFrames } from '../src/harness/crafted-source.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'

const SCOPES = [NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus, 'com.atproto.sync.getBlob']
const BLOBS = 8

/** One exportAccount call as the destination made it, and what the source answered. */
interface Session {
  request: { transferId: string; resume?: { repoCommit: string; blobCursor?: string }; extensions?: string[] }
  /** Content types of all frames the source sent. */
  frames: string[]
  /** Whether this response was cut. */
  cut: boolean
}

/**
 * Decision 7 (extension `resume`): a broken export continues in a new HPKE session for the same
 * transferId, asking only for what is not yet verified here; a literal source starts over.
 */
describe('resume after an interrupted export', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let literalSource: SourceServer
  let dest: DestinationServer

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({ plc: plcDir, blobpackTarget: 40 * 1024 })
    literalSource = await startSourceServer({ plc: plcDir, blobpackTarget: 40 * 1024, extensions: [] })
    dest = await startDestinationServer({ plc: plcDir })
  }, 60_000)

  afterAll(async () => {
    await dest?.close()
    await source?.close()
    await literalSource?.close()
    await plcDir?.close()
  })

  function account(on: SourceServer): Promise<FixtureAccount> {
    return buildAccount(on.store, {
      plcUrl: plcDir.url,
      pdsUrl: on.url,
      pdsRotationKey: on.rotationKey,
      shape: { posts: 50, blobSizes: Array.from({ length: BLOBS }, (_, i) => 30_000 + i * 777) },
    })
  }

  /**
   * The real client, except that the n-th export response (for each `keep[n]` given) is cut in
   * the middle of the frame after its first `keep[n]` frames, as a reset connection would.
   */
  function flakyClient(on: SourceServer, did: string, keep: number[], sessions: Session[]): SourceClient {
    const inner = bearerSourceClient(on.url, on.auth.issue({ did, clientId: dest.clientId }, SCOPES))
    return {
      url: inner.url,
      async fetch(path, init) {
        const res = await inner.fetch(path, init)
        if (path !== `/xrpc/${NSID.exportAccount}` || !res.ok || !res.body) return res
        const chunks: Uint8Array[] = []
        for await (const c of res.body) chunks.push(c)
        const all = Buffer.concat(chunks)
        const frames = await rawFrames([all])
        const k = keep[sessions.length]
        sessions.push({
          request: JSON.parse(String(init?.body)),
          frames: frames.map((f) => f.contentType),
          cut: k !== undefined,
        })
        let end = all.length
        if (k !== undefined) {
          const kept = frames.slice(0, k).reduce((n, f) => n + f.bytes.length, 0)
          end = kept + Math.floor((frames[k]?.bytes.length ?? 0) / 2)
        }
        return new Response(all.subarray(0, end), { status: res.status, headers: res.headers })
      },
    }
  }

  const wait = async (client: SourceClient, did: string) =>
    dest.engine.wait((await dest.engine.start({ did, client })).transferId)

  it('continues from the verified repo and blobs in a new session: nothing verified is sent again', async () => {
    const alice = await account(source)
    const sessions: Session[] = []
    // First session cut inside its third frame: the CAR and one blobpack were verified.
    const t = await wait(flakyClient(source, alice.did, [2], sessions), alice.did)
    expect(t.failure).toBeUndefined()
    expect(t).toMatchObject({ status: 'importing', stage: 'awaitingPlcToken', missingBlobs: [] })
    expect(t.retry).toMatchObject({ attempt: 1, lastFailure: { reason: 'StreamCut' } })

    expect(sessions).toHaveLength(2)
    const [first, second] = sessions as [Session, Session]
    expect(first.request.resume).toBeUndefined()
    expect(first.request.extensions).toContain(EXTENSION.resume)
    expect(second.request.transferId).toBe(first.request.transferId)
    expect(second.request.resume).toEqual({
      repoCommit: t.repo?.commitCid,
      repoRev: t.repo?.rev,
      blobCursor: expect.any(String),
    })
    // The second session starts with blobs: the CAR was not sent again.
    expect(second.frames[0]).toBe(CONTENT_TYPE.blobpack)
    expect(second.frames).not.toContain(CONTENT_TYPE.repoCar)
    expect(second.frames.at(-1)).toBe(CONTENT_TYPE.endManifest)

    // Every blob arrived exactly once over both sessions, and the data is byte-identical.
    expect(t.progress.blobsReceived).toBe(BLOBS)
    expect(t.progress.blobsReconciled).toBe(0)
    for (const [cid, bytes] of alice.blobs) {
      const chunks: Uint8Array[] = []
      for await (const c of (await dest.store.openBlob(alice.did, cid)) ?? []) chunks.push(c)
      expect(Buffer.concat(chunks)).toEqual(Buffer.from(bytes))
    }
    expect(Buffer.from(await dest.store.exportCar(alice.did))).toEqual(
      Buffer.from(await source.store.exportCar(alice.did)),
    )
  })

  it('a cut inside a blobpack after some of its blobs arrived: they come again in the next session, nothing twice', async () => {
    // Fourteen 150 kB blobs in 1 MiB packs: six to a pack. The cut is in the middle of the
    // second, past the first 256 KiB the decoder hands on (so some of its blobs are whole).
    const packed = await startSourceServer({ plc: plcDir, blobpackTarget: 1 << 20 })
    const erin = await buildAccount(packed.store, {
      plcUrl: plcDir.url,
      pdsUrl: packed.url,
      pdsRotationKey: packed.rotationKey,
      shape: { posts: 20, blobSizes: Array.from({ length: 14 }, (_, i) => 150_000 + i * 7) },
    })
    const sessions: Session[] = []
    const flaky = flakyClient(packed, erin.did, [2], sessions)
    let getBlobCalls = 0
    const client: SourceClient = {
      url: flaky.url,
      fetch(path, init) {
        if (path.startsWith('/xrpc/com.atproto.sync.getBlob')) getBlobCalls++
        return flaky.fetch(path, init)
      },
    }
    // Every blob the sink commits (with the session it came in), and those whose bytes had all
    // arrived when their upload was aborted (the pack's tag never came).
    const commits: { cid: string; session: number }[] = []
    const wholeButAborted = new Set<string>()
    const startBlob = dest.sink.startBlob.bind(dest.sink)
    dest.sink.startBlob = async (did, cid, size) => {
      const upload = await startBlob(did, cid, size)
      let written = 0
      return {
        write: (chunk) => {
          written += chunk.length
          return upload.write(chunk)
        },
        commit: async () => {
          await upload.commit()
          commits.push({ cid, session: sessions.length })
        },
        abort: () => {
          if (written === size) wholeButAborted.add(cid)
          return upload.abort()
        },
      }
    }
    try {
      const t = await wait(client, erin.did)
      expect(t.failure).toBeUndefined()
      expect(t).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
      expect(t.retry?.lastFailure?.reason).toBe('StreamCut')
      expect(sessions).toHaveLength(2)

      const first = commits.filter((c) => c.session === 1).map((c) => c.cid)
      // The first pack (several blobs) committed; some blobs of the cut pack had fully arrived.
      expect(first.length).toBeGreaterThanOrEqual(2)
      expect(wholeButAborted.size).toBeGreaterThanOrEqual(1)
      for (const cid of wholeButAborted) expect(first).not.toContain(cid)
      // The cursor is a blob of the committed pack (its last), not one of the cut pack's.
      const cursor = sessions[1]?.request.resume?.blobCursor as string
      expect(first).toContain(cursor)
      expect(wholeButAborted.has(cursor)).toBe(false)
      // Each blob committed exactly once, the cut pack's in the second session; none by getBlob.
      expect(commits.map((c) => c.cid).sort()).toEqual([...erin.blobs.keys()].sort())
      for (const cid of wholeButAborted) expect(commits.find((c) => c.cid === cid)?.session).toBe(2)
      expect(getBlobCalls).toBe(0)
      expect(t.progress).toMatchObject({ blobsReceived: 14, blobsReconciled: 0, blobsMissing: 0 })
    } finally {
      dest.sink.startBlob = startBlob
      await packed.close()
    }
  })

  it('a cut in every session fails as StreamCut after the configured attempts', async () => {
    const bob = await account(source)
    const sessions: Session[] = []
    const t = await wait(flakyClient(source, bob.did, [1, 0, 0], sessions), bob.did)
    expect(t.failure?.reason).toBe('StreamCut')
    expect(sessions).toHaveLength(3)
    expect(t.retry).toMatchObject({ attempt: 2, of: 3 })
    expect(await dest.sink.isActive(bob.did)).toBe(false)
  })

  it('sessions that each commit something new do not use up the attempts (a busy source cutting often)', async () => {
    const gus = await account(source)
    const sessions: Session[] = []
    // Every session is cut after one more frame: 3 attempts would end it, were they counted.
    const t = await wait(flakyClient(source, gus.did, Array(BLOBS + 2).fill(1), sessions), gus.did)
    expect(t.failure).toBeUndefined()
    expect(t.stage).toBe('awaitingPlcToken')
    expect(sessions.length).toBeGreaterThan(3)
    expect(t.progress.blobsReceived + t.progress.blobsReconciled).toBe(BLOBS)
  })

  it('corrupt data is not retried: it is not the connection', async () => {
    const carol = await account(source)
    const sessions: Session[] = []
    const inner = flakyClient(source, carol.did, [], sessions)
    const corrupting: SourceClient = {
      url: inner.url,
      async fetch(path, init) {
        const res = await inner.fetch(path, init)
        if (path !== `/xrpc/${NSID.exportAccount}` || !res.body) return res
        const bytes = Buffer.from(await res.arrayBuffer())
        bytes[bytes.length - 3] = (bytes[bytes.length - 3] as number) ^ 0x01
        return new Response(bytes, { status: res.status, headers: res.headers })
      },
    }
    const t = await wait(corrupting, carol.did)
    expect(t.failure?.reason).toBe('StreamInvalid')
    expect(sessions).toHaveLength(1)
  })

  it('a literal 0014 source is retried from scratch, and what was stored is not stored twice', async () => {
    const dave = await account(literalSource)
    const sessions: Session[] = []
    const t = await wait(flakyClient(literalSource, dave.did, [2], sessions), dave.did)
    expect(t.failure).toBeUndefined()
    expect(t).toMatchObject({ stage: 'awaitingPlcToken', endOfStream: 'unverified', missingBlobs: [] })
    expect(sessions.map((s) => s.request.resume)).toEqual([undefined, undefined])
    expect(sessions[1]?.frames[0]).toBe(CONTENT_TYPE.repoCar)
    for (const [cid] of dave.blobs) expect(await dest.sink.hasBlob(dave.did, cid)).toBe(true)
  })
})
