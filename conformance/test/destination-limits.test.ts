import { NSID } from '@pds-transfer/core'
import { bearerSourceClient, EngineError } from '@pds-transfer/destination'
import type { AccountSource } from '@pds-transfer/source'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { overrideSource } from '../src/harness/override-source.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import type { SqliteAccountStore } from '../src/store/sqlite-account-store.ts'

const SCOPES = [NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus, 'com.atproto.sync.getBlob']

/**
 * The destination's limits from 0014's denial-of-service section: concurrent transfers per
 * worker and per source, and the in-flight storage quota. A refused start changes nothing.
 */
describe('destination limits', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let accounts: FixtureAccount[]
  /** Blob reads wait for this gate to open: transfers stay running while the test looks. */
  let openGate: () => void = () => {}
  let gate = Promise.resolve()
  const gated = (store: SqliteAccountStore): AccountSource =>
    overrideSource(store, {
      async openBlob(did, cid) {
        await gate
        return store.openBlob(did, cid)
      },
    })
  const close = () => {
    gate = new Promise((resolve) => {
      openGate = resolve
    })
  }

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({ plc: plcDir, blobpackTarget: 16 * 1024, wrapSource: gated })
    accounts = []
    for (let i = 0; i < 5; i++)
      accounts.push(
        await buildAccount(source.store, {
          plcUrl: plcDir.url,
          pdsUrl: source.url,
          pdsRotationKey: source.rotationKey,
          shape: { posts: 5, blobSizes: [30_000, 30_000] },
        }),
      )
  }, 60_000)

  afterAll(async () => {
    openGate()
    await source?.close()
    await plcDir?.close()
  })

  const clientFor = (dest: DestinationServer, did: string) =>
    bearerSourceClient(source.url, source.auth.issue({ did, clientId: dest.clientId }, SCOPES))
  const start = (dest: DestinationServer, account: FixtureAccount) =>
    dest.engine.start({ did: account.did, client: clientFor(dest, account.did) })

  async function withDestination(
    limits: Parameters<typeof startDestinationServer>[0]['limits'],
    run: (dest: DestinationServer) => Promise<void>,
  ) {
    const dest = await startDestinationServer({ plc: plcDir, limits })
    try {
      await run(dest)
    } finally {
      openGate()
      await dest.close()
    }
  }

  it('refuses a transfer beyond the per-worker limit, and takes it once one ends', async () => {
    await withDestination({ maxConcurrent: 1 }, async (dest) => {
      close()
      const first = await start(dest, accounts[0]!)
      const refused = await start(dest, accounts[1]!).catch((err: unknown) => err)
      expect(refused).toBeInstanceOf(EngineError)
      expect(refused).toMatchObject({
        code: 'LimitExceeded',
        message: expect.stringContaining('1 transfers are running'),
      })
      expect(await dest.transfers.listActive()).toHaveLength(1) // nothing recorded for the refused one
      openGate()
      expect((await dest.engine.wait(first.transferId)).failure).toBeUndefined()
      const second = await dest.engine.wait((await start(dest, accounts[1]!)).transferId)
      expect(second.failure).toBeUndefined()
    })
  })

  it('refuses a transfer beyond the per-source limit', async () => {
    await withDestination({ maxConcurrent: 5, maxPerSource: 1 }, async (dest) => {
      close()
      const first = await start(dest, accounts[2]!)
      await expect(start(dest, accounts[3]!)).rejects.toMatchObject({
        code: 'LimitExceeded',
        message: expect.stringContaining(`from ${source.url}`),
      })
      openGate()
      expect((await dest.engine.wait(first.transferId)).failure).toBeUndefined()
    })
  })

  it('fails a transfer that would exceed the in-flight storage quota, leaving the account inactive', async () => {
    await withDestination({ maxInFlightBytes: 40_000 }, async (dest) => {
      gate = Promise.resolve()
      const t = await dest.engine.wait((await start(dest, accounts[4]!)).transferId)
      expect(t.status).toBe('failed')
      expect(t.failure).toMatchObject({ reason: 'LimitExceeded', message: expect.stringContaining('quota') })
      expect(await dest.sink.isActive(accounts[4]!.did)).toBe(false)
    })
  })
})
