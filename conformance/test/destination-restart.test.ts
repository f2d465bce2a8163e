import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { NSID } from '@pds-transfer/core'
import type { InboundTransfer } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { ChildPeer } from '../src/harness/child-peer.ts'
import { freePort } from '../src/harness/destination-server.ts'
import { onFirstRead, overrideSource } from '../src/harness/override-source.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import { SqliteAccountStore } from '../src/store/sqlite-account-store.ts'

const SCOPES = [NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus, 'com.atproto.sync.getBlob']
const BLOBS = 10

const DESTINATION_SCRIPT = join(import.meta.dirname, '../src/harness/destination-process.ts')
type Ready = { url: string; recovered: InboundTransfer[] }

/**
 * Issue 7: the destination process is killed (SIGKILL, no shutdown) in the middle of a
 * transfer and started again on the same data; it resumes from what it had verified and
 * committed, in a new export session, and nothing verified is downloaded again.
 */
describe('destination killed and restarted mid-transfer', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let account: FixtureAccount
  let dir: string
  const carOpens: string[] = []
  const blobOpens: string[] = []

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({
      plc: plcDir,
      blobpackTarget: 40 * 1024,
      // A slow disk on the source, so the transfer is still running when the destination dies.
      wrapSource: (store) =>
        overrideSource(store, {
          async openBlob(did, cid) {
            const stream = await store.openBlob(did, cid)
            if (!stream) return stream
            // Counted when read: the source also opens each blob once unread, to see it is there.
            return onFirstRead(stream, async () => {
              blobOpens.push(cid)
              await new Promise((r) => setTimeout(r, 150))
            })
          },
          async snapshotRepo(did) {
            const snapshot = await store.snapshotRepo(did)
            return {
              ...snapshot,
              open: () => {
                carOpens.push(snapshot.commitCid)
                return snapshot.open()
              },
              release: () => snapshot.release(),
            }
          },
        }),
    })
    account = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts: 40, blobSizes: Array.from({ length: BLOBS }, (_, i) => 30_000 + i * 501) },
    })
    dir = await mkdtemp(join(tmpdir(), 'pds-transfer-restart-'))
  }, 60_000)

  afterAll(async () => {
    await source?.close()
    await plcDir?.close()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('resumes after SIGKILL without downloading verified data again', async () => {
    const port = await freePort()
    const env = {
      PLC_URL: plcDir.url,
      DEST_DIR: dir,
      DEST_PORT: String(port),
      SOURCE_URL: source.url,
      SOURCE_TOKEN: source.auth.issue(
        {
          did: account.did,
          clientId: `http://127.0.0.1:${port}/.well-known/oauth-client-metadata/migration`,
        },
        SCOPES,
      ),
    }
    const first = ChildPeer.fork<Ready>(DESTINATION_SCRIPT, env)
    const { url } = await first.ready
    const started = await first.call<InboundTransfer>({ start: account.did })
    // Kill it once some blobs are committed and some are not.
    const status = async () =>
      (await (
        await fetch(`${url}/xrpc/${NSID.getTransferStatus}?transferId=${started.transferId}`)
      ).json()) as { progress: { blobsReceived: number }; stage: string }
    for (let i = 0; i < 200 && (await status()).progress.blobsReceived < 2; i++) {
      await new Promise((r) => setTimeout(r, 25))
    }
    const before = await status()
    expect(before.progress.blobsReceived).toBeGreaterThanOrEqual(2)
    expect(before.progress.blobsReceived).toBeLessThan(BLOBS)
    await first.kill()

    const second = ChildPeer.fork<Ready>(DESTINATION_SCRIPT, env)
    const { recovered } = await second.ready
    expect(recovered.map((t) => t.transferId)).toEqual([started.transferId])
    const done = await second.call<InboundTransfer>({ wait: started.transferId })
    await second.kill()

    expect(done.failure).toBeUndefined()
    expect(done).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    // The CAR went over the wire once; the blobs of committed blobpacks were not sent again.
    expect(carOpens).toHaveLength(1)
    expect(blobOpens.length).toBeLessThan(2 * BLOBS)
    expect(new Set(blobOpens).size).toBe(BLOBS)

    const landed = await SqliteAccountStore.open(dir)
    try {
      expect(Buffer.from(await landed.exportCar(account.did))).toEqual(
        Buffer.from(await source.store.exportCar(account.did)),
      )
      for (const [cid, bytes] of account.blobs) {
        const chunks: Uint8Array[] = []
        for await (const c of (await landed.openBlob(account.did, cid)) ?? []) chunks.push(c)
        expect(Buffer.concat(chunks).equals(Buffer.from(bytes)), cid).toBe(true)
      }
    } finally {
      landed.close()
    }
  }, 60_000)
})
