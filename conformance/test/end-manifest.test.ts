import { CONTENT_TYPE, type EndManifest, EXTENSION, encodeEndManifest, NSID } from '@pds-transfer/core'
import { bearerSourceClient, type SourceClient } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { craftedSourceClient, frameRewritingClient } from '../src/harness/crafted-source.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'

const SCOPES = [NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus, 'com.atproto.sync.getBlob']

/**
 * Erratum E1 and its mitigation (extension `end-manifest`, spec/extensions.md): a literal 0014
 * stream cut at a frame boundary looks complete; with the manifest, every such cut is caught.
 * Peers without the extension still interoperate, with the weaker guarantee recorded.
 */
describe('erratum E1: end of stream', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let literalSource: SourceServer
  let dest: DestinationServer
  let literalDest: DestinationServer
  let alice: FixtureAccount
  let carol: FixtureAccount
  let dave: FixtureAccount

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({ plc: plcDir, blobpackTarget: 48 * 1024 })
    literalSource = await startSourceServer({ plc: plcDir, blobpackTarget: 48 * 1024, extensions: [] })
    dest = await startDestinationServer({ plc: plcDir })
    literalDest = await startDestinationServer({ plc: plcDir, extensions: [] })
    const shape = { posts: 30, blobSizes: [20_000, 21_000, 22_000, 23_000] }
    alice = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape,
    })
    dave = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape,
    })
    carol = await buildAccount(literalSource.store, {
      plcUrl: plcDir.url,
      pdsUrl: literalSource.url,
      pdsRotationKey: literalSource.rotationKey,
      shape,
    })
  }, 120_000)

  afterAll(async () => {
    await dest?.close()
    await literalDest?.close()
    await source?.close()
    await literalSource?.close()
    await plcDir?.close()
  })

  const clientFor = (on: SourceServer, did: string, to: DestinationServer): SourceClient =>
    bearerSourceClient(on.url, on.auth.issue({ did, clientId: to.clientId }, SCOPES))

  async function run(to: DestinationServer, client: SourceClient, did: string) {
    to.store.db.prepare('DELETE FROM repo_root WHERE did = ?').run(did)
    to.store.db.prepare('DELETE FROM blob WHERE did = ?').run(did)
    return to.engine.wait((await to.engine.start({ did, client })).transferId)
  }

  it('both sides advertise the extension in their well-known documents', async () => {
    for (const url of [source.url, dest.url]) {
      const doc = (await (await fetch(`${url}/.well-known/atproto-transfer`)).json()) as {
        extensions?: string[]
      }
      expect(doc.extensions).toContain(EXTENSION.endManifest)
    }
    const literal = (await (
      await fetch(`${literalSource.url}/.well-known/atproto-transfer`)
    ).json()) as object
    expect(literal).not.toHaveProperty('extensions')
  })

  it('a literal 0014 stream cut at a frame boundary imports "successfully" without the end (the erratum)', async () => {
    const honest = clientFor(literalSource, carol.did, dest)
    const full = await run(dest, honest, carol.did)
    expect(full).toMatchObject({ status: 'importing', endOfStream: 'unverified' })
    // Drop the private-state frame: nothing on the wire says it was ever sent.
    const cut = frameRewritingClient(honest, (frames) => frames.slice(0, -1).map((f) => f.bytes))
    const t = await run(dest, cut, carol.did)
    expect(t.failure).toBeUndefined()
    expect(t).toMatchObject({ status: 'importing', endOfStream: 'unverified' })
    expect(t.progress.framesReceived).toBe(full.progress.framesReceived - 1)
  })

  it('with the manifest, a cut at every frame boundary is caught as StreamCut (then resumed)', async () => {
    const honest = clientFor(source, alice.did, dest)
    const full = await run(dest, honest, alice.did)
    expect(full).toMatchObject({ status: 'importing', endOfStream: 'manifest' })
    const frames = full.progress.framesReceived
    expect(frames).toBeGreaterThanOrEqual(5) // CAR, >= 2 blobpacks, state, manifest
    for (let keep = 1; keep < frames; keep++) {
      // Only the first session is cut; the retry (extension `resume`) gets the rest.
      let calls = 0
      const cutOnce: SourceClient = {
        url: honest.url,
        fetch: (path, init) => {
          if (path === `/xrpc/${NSID.exportAccount}` && calls++ === 0) {
            return frameRewritingClient(honest, (all) => all.slice(0, keep).map((f) => f.bytes)).fetch(
              path,
              init,
            )
          }
          return honest.fetch(path, init)
        },
      }
      const t = await run(dest, cutOnce, alice.did)
      expect(t.retry?.lastFailure, `cut after ${keep} frames`).toMatchObject({
        reason: 'StreamCut',
        message: expect.stringMatching(/before the end manifest/),
      })
      expect(t.failure, `cut after ${keep} frames`).toBeUndefined()
      expect(t).toMatchObject({ stage: 'awaitingPlcToken', endOfStream: 'manifest', missingBlobs: [] })
      expect(t.progress.blobsReceived).toBe(full.progress.blobsReceived)
    }
  })

  describe('a manifest that does not match what arrived, in any one field, is StreamInvalid', () => {
    /** A stream of the CAR alone and then `manifest`, with the extension confirmed in the header. */
    async function withManifest(edit: (honest: EndManifest) => EndManifest) {
      const honest = clientFor(source, alice.did, dest)
      const car = await source.store.exportCar(alice.did)
      const head = await source.store.snapshotRepo(alice.did)
      await head.release()
      const truth: EndManifest = {
        frames: 1,
        bytes: car.length,
        blobs: 0,
        repoRev: head.rev,
        repoCommit: head.commitCid,
        deferredBlobs: [],
      }
      const lying = craftedSourceClient(honest, () => [
        { contentType: CONTENT_TYPE.repoCar, bytes: car },
        { contentType: CONTENT_TYPE.endManifest, bytes: encodeEndManifest(edit(truth)) },
      ])
      const withHeader: SourceClient = {
        url: lying.url,
        async fetch(path, init) {
          const res = await lying.fetch(path, init)
          if (path !== `/xrpc/${NSID.exportAccount}`) return res
          const headers = new Headers(res.headers)
          headers.set('atproto-transfer-extensions', EXTENSION.endManifest)
          return new Response(res.body, { status: res.status, headers })
        },
      }
      return run(dest, withHeader, alice.did)
    }

    it('control: the true manifest is accepted (the blobs then come by reconciliation)', async () => {
      const t = await withManifest((m) => m)
      expect(t.failure).toBeUndefined()
      expect(t).toMatchObject({ stage: 'awaitingPlcToken', endOfStream: 'manifest', missingBlobs: [] })
    })

    const lies: Array<[string, RegExp, (m: EndManifest) => EndManifest]> = [
      ['frames', /frames: sent 2, received 1/, (m) => ({ ...m, frames: 2 })],
      ['bytes', /plaintext bytes: sent \d+, received \d+/, (m) => ({ ...m, bytes: m.bytes + 1 })],
      ['blobs', /blobs: sent 4, received 0/, (m) => ({ ...m, blobs: 4 })],
      ['repoRev', /repo rev: sent \w+, received \w+/, (m) => ({ ...m, repoRev: otherTid(m.repoRev) })],
      [
        'repoCommit',
        /repo commit: sent bafkrei\w+, received \w+/,
        (m) => ({ ...m, repoCommit: [...alice.blobs.keys()][0] as string }),
      ],
    ]
    for (const [field, message, lie] of lies) {
      it(`${field}`, async () => {
        const t = await withManifest(lie)
        expect(t.failure).toMatchObject({ reason: 'StreamInvalid', message: expect.stringMatching(message) })
        // Only the one field is named.
        expect(t.failure?.message.match(/sent/g)).toHaveLength(1)
        expect(await dest.sink.isActive(alice.did)).toBe(false)
      })
    }
  })

  it('a manifest the destination did not ask for is StreamInvalid', async () => {
    const honest = clientFor(source, alice.did, literalDest)
    const car = await source.store.exportCar(alice.did)
    const sneaky = craftedSourceClient(honest, () => [
      { contentType: CONTENT_TYPE.repoCar, bytes: car },
      { contentType: CONTENT_TYPE.endManifest, bytes: new Uint8Array([0xa0]) },
    ])
    const t = await run(literalDest, sneaky, alice.did)
    expect(t.failure).toMatchObject({
      reason: 'StreamInvalid',
      message: expect.stringMatching(/did not negotiate/),
    })
  })

  it('a literal 0014 destination gets a literal stream from our source, and completes', async () => {
    const t = await run(literalDest, clientFor(source, dave.did, literalDest), dave.did)
    expect(t.failure).toBeUndefined()
    expect(t).toMatchObject({ status: 'importing', stage: 'awaitingPlcToken', endOfStream: 'unverified' })
    expect(t.progress.blobsReceived).toBe(4)
    expect(t.expected).toBeUndefined() // no size-hint either: a literal peer gets no extension
  })
})

/** A rev (TID) other than `rev`, still well formed: its last character changed. */
function otherTid(rev: string): string {
  return `${rev.slice(0, -1)}${rev.endsWith('2') ? '3' : '2'}`
}
