import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Secp256k1Keypair } from '@atproto/crypto'
import * as plc from '@did-plc/lib'
import { NSID } from '@pds-transfer/core'
import {
  bearerSourceClient,
  EngineError,
  type EngineLimits,
  type InboundTransfer,
  type InboundTransferStore,
  KeyRing,
  PlcDidResolver,
  SqliteInboundTransferStore,
  SqliteKeyStore,
  TransferEngine,
} from '@pds-transfer/destination'
import type { AccountSource } from '@pds-transfer/source'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { type KeyHost, startKeyHost } from '../src/harness/key-host.ts'
import { overrideSource } from '../src/harness/override-source.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import { SqliteAccountSink } from '../src/store/sqlite-account-sink.ts'
import { SqliteAccountStore } from '../src/store/sqlite-account-store.ts'

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

  /**
   * A store that answers every call after 50 ms, as a database across a network would: the
   * limits must hold when concurrent starts interleave between their store calls (issue 16).
   */
  describe('with a store that answers asynchronously', () => {
    const DELAY_MS = 50
    let many: FixtureAccount[]
    /**
     * The OAuth client of every engine here, publishing the current one's keys: one client, so
     * that the source lets each test's export of an account supersede the last one's.
     */
    let keyHost: KeyHost

    beforeAll(async () => {
      many = []
      for (let i = 0; i < 10; i++)
        many.push(
          await buildAccount(source.store, {
            plcUrl: plcDir.url,
            pdsUrl: source.url,
            pdsRotationKey: source.rotationKey,
            shape: { posts: 1, blobSizes: [2000] },
          }),
        )
      keyHost = await startKeyHost([])
    }, 60_000)

    afterAll(async () => {
      await keyHost?.close()
    })

    const slow = (store: InboundTransferStore): InboundTransferStore =>
      new Proxy(store, {
        get(target, prop) {
          const value = Reflect.get(target, prop)
          if (typeof value !== 'function') return value
          return async (...args: unknown[]) => {
            await new Promise((resolve) => setTimeout(resolve, DELAY_MS))
            return value.apply(target, args)
          }
        },
      })

    /** An engine of our own over the slow store (the harness's destination has the direct one). */
    async function withSlowEngine(
      limits: Partial<EngineLimits>,
      run: (engine: TransferEngine, transfers: SqliteInboundTransferStore) => Promise<void>,
    ) {
      const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-slow-store-'))
      const accountStore = await SqliteAccountStore.open(dir)
      const transfers = new SqliteInboundTransferStore(join(dir, 'transfers.sqlite'))
      const keyStore = new SqliteKeyStore(join(dir, 'keys.sqlite'))
      const keys = new KeyRing(keyStore, ['HPKE-3'])
      await keys.rotate()
      // The source encrypts only to keys published at the client's origin.
      keyHost.keys = await keys.published()
      const engine = new TransferEngine({
        sink: new SqliteAccountSink(accountStore),
        store: slow(transfers),
        keys,
        resolver: new PlcDidResolver(plcDir.url),
        plc: new plc.Client(plcDir.url),
        serviceUrl: 'http://127.0.0.1:9',
        rotationKey: (await Secp256k1Keypair.create()).did(),
        limits: { retry: { attempts: 1, baseDelayMs: 20 }, ...limits },
      })
      try {
        close()
        await run(engine, transfers)
      } finally {
        openGate()
        await engine.close()
        transfers.close()
        keyStore.close()
        accountStore.close()
        await rm(dir, { recursive: true, force: true })
      }
    }

    const startOn = (engine: TransferEngine, account: FixtureAccount) =>
      engine.start({
        did: account.did,
        client: bearerSourceClient(
          source.url,
          source.auth.issue({ did: account.did, clientId: keyHost.clientId }, SCOPES),
        ),
      })

    /** Accepted transfers and refusals of starts run at once. */
    async function concurrently(starts: Promise<InboundTransfer>[]) {
      const settled = await Promise.allSettled(starts)
      return {
        accepted: settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])),
        refused: settled.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : [])),
      }
    }

    /** Every accepted pull ends well once the gate opens: none was refused behind our back. */
    async function finish(engine: TransferEngine, accepted: InboundTransfer[]) {
      openGate()
      for (const t of accepted) expect((await engine.wait(t.transferId)).failure).toBeUndefined()
    }

    it('ten concurrent starts from one source: the per-source limit holds', async () => {
      await withSlowEngine({ maxConcurrent: 20, maxPerSource: 2 }, async (engine, transfers) => {
        const { accepted, refused } = await concurrently(many.map((a) => startOn(engine, a)))
        expect(accepted).toHaveLength(2)
        expect(refused).toHaveLength(8)
        for (const err of refused) {
          expect(err).toBeInstanceOf(EngineError)
          expect(err).toMatchObject({
            code: 'LimitExceeded',
            message: `2 transfers from ${source.url} are running`,
          })
        }
        expect((await transfers.listActive()).map((t) => t.transferId).sort()).toEqual(
          accepted.map((t) => t.transferId).sort(),
        )
        await finish(engine, accepted)
      })
    })

    it('ten concurrent starts on one worker: the per-worker limit holds', async () => {
      await withSlowEngine({ maxConcurrent: 3, maxPerSource: 20 }, async (engine, transfers) => {
        const { accepted, refused } = await concurrently(many.map((a) => startOn(engine, a)))
        expect(accepted).toHaveLength(3)
        expect(refused).toHaveLength(7)
        for (const err of refused) {
          expect(err).toMatchObject({
            code: 'LimitExceeded',
            message: '3 transfers are running; try again later',
          })
        }
        expect(await transfers.listActive()).toHaveLength(3)
        await finish(engine, accepted)
      })
    })

    it('two concurrent starts of one DID: one is accepted, the other refused', async () => {
      await withSlowEngine({ maxConcurrent: 20, maxPerSource: 20 }, async (engine, transfers) => {
        const account = many[0] as FixtureAccount
        const { accepted, refused } = await concurrently([startOn(engine, account), startOn(engine, account)])
        expect(accepted).toHaveLength(1)
        expect(refused).toHaveLength(1)
        expect(refused[0]).toBeInstanceOf(EngineError)
        expect(refused[0]).toMatchObject({
          code: 'InvalidState',
          message: `${account.did} is already being imported`,
        })
        expect(await transfers.listActive()).toHaveLength(1)
        await finish(engine, accepted)
      })
    })

    it('a transfer waiting for its code is not completed while another pull of its DID runs', async () => {
      await withSlowEngine({ maxConcurrent: 20, maxPerSource: 20 }, async (engine, transfers) => {
        const account = many[1] as FixtureAccount
        openGate()
        const waiting = await engine.wait((await startOn(engine, account)).transferId)
        expect(waiting.stage).toBe('awaitingPlcToken')
        // Waiting for the user is not in flight: a new pull of the DID may start...
        close()
        const again = await startOn(engine, account)
        // ...but the waiting one cannot then move the account while that pull writes into it.
        await expect(engine.complete(waiting.transferId, { plcToken: 'AAAAA-BBBBB' })).rejects.toMatchObject({
          code: 'InvalidState',
          message: `${account.did} has another transfer in flight`,
        })
        expect((await transfers.get(waiting.transferId))?.stage).toBe('awaitingPlcToken')
        await finish(engine, [again])
      })
    })
  })
})
