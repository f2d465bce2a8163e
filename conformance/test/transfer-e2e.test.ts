import * as plc from '@did-plc/lib'
import { NSID } from '@pds-transfer/core'
import { bearerSourceClient, type InboundTransfer, type SourceClient } from '@pds-transfer/destination'
import type { IdentityAlert } from '@pds-transfer/identity'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount, SAMPLE_PREFERENCES } from '../src/fixtures/build-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'

const SCOPES = [NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus, 'com.atproto.sync.getBlob']

describe('our destination pulls from our source (full 0014 flow)', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let dest: DestinationServer
  let account: FixtureAccount
  let client: SourceClient
  const rollbacks: InboundTransfer[] = []
  const alerts: IdentityAlert[] = []

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({ plc: plcDir, blobpackTarget: 128 * 1024 })
    dest = await startDestinationServer({
      plc: plcDir,
      watch: {
        watchEveryMs: 50,
        onRollback: (t, alert) => {
          rollbacks.push(t)
          alerts.push(alert)
        },
      },
    })
    account = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts: 600, blobSizes: Array.from({ length: 12 }, (_, i) => 30_000 + i * 1013) },
    })
    client = bearerSourceClient(
      source.url,
      source.auth.issue({ did: account.did, clientId: dest.clientId }, SCOPES),
    )
  }, 120_000)

  afterAll(async () => {
    await dest?.close()
    await source?.close()
    await plcDir?.close()
  })

  it('imports, verifies and completes; the DID moves and nothing is lost', async () => {
    const started = await dest.engine.start({ did: account.did, client })
    const imported = await dest.engine.wait(started.transferId)
    expect(imported.failure).toBeUndefined()
    expect(imported).toMatchObject({
      status: 'importing',
      stage: 'awaitingPlcToken',
      missingBlobs: [],
      endOfStream: 'manifest',
    })
    expect(imported.progress).toMatchObject({
      records: 600,
      blobsReceived: 12,
      blobsReconciled: 0,
      blobsMissing: 0,
    })

    // Everything arrived byte for byte, but nothing is live yet.
    expect(Buffer.from(await dest.store.exportCar(account.did))).toEqual(
      Buffer.from(await source.store.exportCar(account.did)),
    )
    for (const [cid] of account.blobs) expect(await dest.sink.hasBlob(account.did, cid)).toBe(true)
    expect(await dest.store.getPreferences(account.did)).toEqual(SAMPLE_PREFERENCES)
    expect((await dest.store.getAccountState(account.did)).email).toBe(`${account.handle}@example.com`)
    expect(await dest.sink.isActive(account.did)).toBe(false)

    // Extension size-hint: the source said up front what came (CAR + blobpack entries; only the
    // small frames, blobpack headers and the manifest are beyond it).
    const expected = imported.expected as { bytes: number; blobs: number }
    expect(expected.blobs).toBe(12)
    expect(expected.bytes).toBeLessThanOrEqual(imported.progress.bytesReceived)
    expect(imported.progress.bytesReceived - expected.bytes).toBeLessThan(4096)

    const status = await fetch(`${dest.url}/xrpc/${NSID.getTransferStatus}?transferId=${started.transferId}`)
    expect(await status.json()).toMatchObject({
      status: 'importing',
      stage: 'awaitingPlcToken',
      endOfStream: 'manifest',
      progress: { bytesExpected: expected.bytes, blobsExpected: 12 },
    })

    const token = source.store.outbox.filter((m) => m.did === account.did).at(-1)?.token
    expect(token).toBeDefined()
    const done = await dest.engine.complete(started.transferId, { plcToken: token as string })
    expect(done.failure).toBeUndefined()
    expect(done.status).toBe('completed')

    const doc = await new plc.Client(plcDir.url).getDocumentData(account.did)
    expect(doc.services.atproto_pds?.endpoint).toBe(dest.url)
    expect(doc.verificationMethods.atproto).toBe(done.signingKey)
    // The user's recovery key keeps index 0; the source's key is gone; ours is added.
    expect(doc.rotationKeys).toEqual([account.recoveryKey.did(), dest.rotationKey.did()])
    expect(await dest.sink.isActive(account.did)).toBe(true)
    expect((await source.store.getAccount(account.did))?.status).toBe('deactivated')
    expect(await dest.engine.checkRollbacks()).toEqual([])
  })
  it('watches the PLC log after the move and flags an operation that moves the account away', async () => {
    const plcClient = new plc.Client(plcDir.url)
    const moved = await dest.engine.get(
      (await dest.transfers.listWatched(Date.now()))[0]?.transferId as string,
    )
    expect(moved?.did).toBe(account.did)
    expect(rollbacks).toEqual([])
    // Someone holding a rotation key (here the user's own) points the DID elsewhere.
    const last = await plcClient.getLastOp(account.did)
    if (last.type === 'plc_tombstone') throw new Error('tombstoned')
    const op = await plc.createUpdateOp(last, account.recoveryKey, (doc) => ({
      ...doc,
      services: {
        ...doc.services,
        atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: 'https://elsewhere.example' },
      },
    }))
    await plcClient.sendOperation(account.did, op)
    for (let i = 0; i < 100 && rollbacks.length === 0; i++) await new Promise((r) => setTimeout(r, 20))
    expect(rollbacks).toHaveLength(1)
    const message = rollbacks[0]?.rollback?.message as string
    expect(message).toContain(`pointed it at https://elsewhere.example (was ${dest.url})`)
    // Who signed it, until when it can be undone, and how: the user's key, at our /recover.
    const change = (await plcClient.getAuditableLog(account.did)).at(-1) as plc.ExportedOp
    const deadline = new Date(new Date(change.createdAt).getTime() + 72 * 3_600_000).toISOString()
    expect(message).toContain(`signed by ${account.recoveryKey.did()}`)
    // The round may have begun just before the change arrived: 71 or 72 hours left.
    expect(message).toContain(
      `Your rotation key ${account.recoveryKey.did()} can undo it until ${deadline} (7`,
    )
    expect(message).toContain(
      `hours left): use it at ${dest.url}/recover, or run: pds-identity recover ${account.did} --key <your-key-file> --pds <new-pds-url>`,
    )
    expect(rollbacks[0]?.rollback?.operationCid).toBe(change.cid)
    const status = await fetch(`${dest.url}/xrpc/${NSID.getTransferStatus}?transferId=${moved?.transferId}`)
    expect(await status.json()).toMatchObject({
      status: 'completed',
      rollback: { operationCid: expect.any(String) },
    })
    // The sinks get the watcher's alert: the user's own key, but the identity no longer names us.
    expect(alerts[0]).toMatchObject({
      did: account.did,
      signedBy: account.recoveryKey.did(),
      signedByExpectedKey: true,
      expected: false,
      problems: [`the identity now names https://elsewhere.example, not ${dest.url}`],
      recovery: { possible: true, key: account.recoveryKey.did(), kind: 'update' },
    })
    // Told once, not at every round of the watch.
    await new Promise((r) => setTimeout(r, 200))
    expect(rollbacks).toHaveLength(1)
  })
})
