import { BLOBPACK_HEADER_LENGTH, blobCid, CONTENT_TYPE, encodeBlobpack, NSID } from '@pds-transfer/core'
import { bearerSourceClient, type FailureReason, type SourceClient } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { craftedSourceClient, frameRewritingClient, tamperingClient } from '../src/harness/crafted-source.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import {
  collect,
  cutAfter,
  flipBitAt,
  flipTagOf,
  forgedCar,
  swapFrames,
  wrongBytesBlobpack,
} from '../src/harness/hostile-streams.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import { SqliteAccountStore } from '../src/store/sqlite-account-store.ts'
import { BAD_PREFERENCES } from '../src/suite/hostile-source.ts'

const SCOPES = [NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus, 'com.atproto.sync.getBlob']

/**
 * Issue 4's bad-input table: every hostile stream ends in a named failure, the account stays
 * deactivated, and nothing of the failing unit (nor of another account) is committed.
 */
describe('destination refuses hostile or broken streams', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let dest: DestinationServer
  let alice: FixtureAccount
  let bob: FixtureAccount
  let honest: SourceClient
  let scratch: SqliteAccountStore

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({
      plc: plcDir,
      blobpackTarget: 64 * 1024,
      exportsPerDestinationPerHour: 100,
    })
    dest = await startDestinationServer({ plc: plcDir })
    const shape = { posts: 40, blobSizes: Array.from({ length: 6 }, (_, i) => 20_000 + i * 101) }
    const common = { plcUrl: plcDir.url, pdsUrl: source.url, pdsRotationKey: source.rotationKey }
    alice = await buildAccount(source.store, { ...common, shape })
    bob = await buildAccount(source.store, { ...common, shape })
    honest = clientFor(alice.did)
    scratch = await SqliteAccountStore.open(`${dest.dir}/scratch`)
  }, 120_000)

  afterAll(async () => {
    scratch?.close()
    await dest?.close()
    await source?.close()
    await plcDir?.close()
  })

  function clientFor(did: string): SourceClient {
    return bearerSourceClient(source.url, source.auth.issue({ did, clientId: dest.clientId }, SCOPES))
  }

  async function expectFailure(client: SourceClient, reason: FailureReason, message?: RegExp) {
    // Each case starts from a clean slate for alice on the destination.
    dest.store.db.prepare('DELETE FROM repo_root WHERE did = ?').run(alice.did)
    dest.store.db.prepare('DELETE FROM blob WHERE did = ?').run(alice.did)
    const t = await dest.engine.wait((await dest.engine.start({ did: alice.did, client })).transferId)
    expect(t.status).toBe('failed')
    expect(t.failure?.reason).toBe(reason)
    if (message) expect(t.failure?.message).toMatch(message)
    expect(await dest.sink.isActive(alice.did)).toBe(false)
    expect(dest.store.db.prepare('SELECT count(*) AS n FROM staged_block').get()).toEqual({ n: 0 })
    expect(dest.store.db.prepare('SELECT count(*) AS n FROM account WHERE did = ?').get(bob.did)).toEqual({
      n: 0,
    })
    return t
  }

  const repoRoot = () => dest.store.db.prepare('SELECT rev FROM repo_root WHERE did = ?').get(alice.did)
  const blobCount = () =>
    (dest.store.db.prepare('SELECT count(*) AS n FROM blob WHERE did = ?').get(alice.did) as { n: number }).n

  it('a flipped ciphertext byte in the CAR frame: StreamInvalid, no repo', async () => {
    await expectFailure(tamperingClient(honest, flipBitAt(200)), 'StreamInvalid', /FrameAuthFailed/)
    expect(repoRoot()).toBeUndefined()
  })

  it('a tampered blobpack frame: its blobs are not committed', async () => {
    const t = await expectFailure(
      frameRewritingClient(honest, flipTagOf(2)),
      'StreamInvalid',
      /FrameAuthFailed/,
    )
    expect(t.progress.framesReceived).toBe(2)
    expect(blobCount()).toBe(t.progress.blobsReceived)
  })

  it('reordered frames: StreamInvalid (FrameOutOfOrder)', async () => {
    await expectFailure(frameRewritingClient(honest, swapFrames(1, 2)), 'StreamInvalid', /FrameOutOfOrder/)
  })

  it('a stream cut inside a frame: StreamCut', async () => {
    await expectFailure(tamperingClient(honest, cutAfter(5000)), 'StreamCut', /Truncated/)
    expect(repoRoot()).toBeUndefined()
  })

  it("another account's stream (DID swap by the source): StreamInvalid, neither account touched", async () => {
    const bobClient = clientFor(bob.did)
    const swapped: SourceClient = {
      url: source.url,
      fetch: (path, init) => {
        if (path !== `/xrpc/${NSID.exportAccount}`) return honest.fetch(path, init)
        const body = { ...JSON.parse(String(init?.body)), did: bob.did }
        return bobClient.fetch(path, { ...init, body: JSON.stringify(body) })
      },
    }
    await expectFailure(swapped, 'StreamInvalid', /FrameAuthFailed/)
  })

  it('a stream for another transferId: StreamInvalid', async () => {
    const other = '019537a1-7e28-7def-8c56-3a8b69e2d471'
    const client = tamperingClient(
      honest,
      (b) => b,
      (req) => ({ ...req, transferId: other }),
    )
    await expectFailure(client, 'StreamInvalid', /FrameAuthFailed/)
  })

  it('a CAR whose commit is not signed by the DID key: RepoInvalid', async () => {
    const car = await forgedCar(scratch, alice.did)
    const client = craftedSourceClient(honest, () => [{ contentType: CONTENT_TYPE.repoCar, bytes: car }])
    await expectFailure(client, 'RepoInvalid', /signature/)
    expect(repoRoot()).toBeUndefined()
  })

  it('a blob whose bytes do not match its CID: BlobInvalid, that blob not stored', async () => {
    const car = await source.store.exportCar(alice.did)
    const [realCid, realBytes] = [...alice.blobs][0] as [string, Uint8Array]
    const pack = await wrongBytesBlobpack(realBytes)
    expect(pack.length).toBeGreaterThan(BLOBPACK_HEADER_LENGTH)
    const client = craftedSourceClient(honest, () => [
      { contentType: CONTENT_TYPE.repoCar, bytes: car },
      { contentType: CONTENT_TYPE.blobpack, bytes: pack },
    ])
    await expectFailure(client, 'BlobInvalid', /BlobpackCidMismatch/)
    expect(await dest.sink.hasBlob(alice.did, realCid)).toBe(false)
  })

  it('frames after the CAR of an unknown kind or out of order: StreamInvalid', async () => {
    const car = await source.store.exportCar(alice.did)
    const client = craftedSourceClient(honest, () => [
      { contentType: CONTENT_TYPE.repoCar, bytes: car },
      { contentType: CONTENT_TYPE.accountState, bytes: Uint8Array.of(0xa0) },
      { contentType: CONTENT_TYPE.preferences, bytes: new TextEncoder().encode('[]') },
    ])
    await expectFailure(client, 'StreamInvalid', /out of order/)
  })

  it('a second repo CAR frame (decision D12): StreamInvalid, nothing after it stored', async () => {
    const car = await source.store.exportCar(alice.did)
    const [, blob] = [...alice.blobs][0] as [string, Uint8Array]
    const pack = await collect(
      encodeBlobpack([
        {
          cid: blobCid(blob),
          size: blob.length,
          open: async function* () {
            yield blob
          },
        },
      ]),
    )
    const client = craftedSourceClient(honest, () => [
      { contentType: CONTENT_TYPE.repoCar, bytes: car },
      { contentType: CONTENT_TYPE.repoCar, bytes: car },
      { contentType: CONTENT_TYPE.blobpack, bytes: pack },
    ])
    const t = await expectFailure(client, 'StreamInvalid', /application\/vnd\.ipld\.car frame out of order/)
    expect(t.progress.framesReceived).toBe(1)
    expect(blobCount()).toBe(0)
  })

  it('a preferences item that fails the app.bsky lexicon: PreferencesInvalid, nothing of it stored', async () => {
    const car = await source.store.exportCar(alice.did)
    const preferences = dest.store.db.prepare('SELECT preferences FROM account WHERE did = ?')
    const before = preferences.get(alice.did)
    const client = craftedSourceClient(honest, () => [
      { contentType: CONTENT_TYPE.repoCar, bytes: car },
      {
        contentType: CONTENT_TYPE.preferences,
        bytes: new TextEncoder().encode(JSON.stringify(BAD_PREFERENCES)),
      },
    ])
    await expectFailure(
      client,
      'PreferencesInvalid',
      /item 1 \(app\.bsky\.actor\.defs#adultContentPref\).*enabled must be a boolean/,
    )
    expect(preferences.get(alice.did)).toEqual(before)
  })

  it('a first frame that is not the repo: StreamInvalid', async () => {
    const client = craftedSourceClient(honest, () => [
      { contentType: CONTENT_TYPE.preferences, bytes: new TextEncoder().encode('[]') },
    ])
    await expectFailure(client, 'StreamInvalid', /must start with the repo/)
  })

  it('private state that is not a CBOR map: AccountStateInvalid', async () => {
    const car = await source.store.exportCar(alice.did)
    const client = craftedSourceClient(honest, () => [
      { contentType: CONTENT_TYPE.repoCar, bytes: car },
      { contentType: CONTENT_TYPE.accountState, bytes: Uint8Array.of(0x80) },
    ])
    await expectFailure(client, 'AccountStateInvalid')
  })
})
