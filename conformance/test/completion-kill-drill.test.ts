import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as plc from '@did-plc/lib'
import { bearerSourceClient, EngineError, type InboundTransfer } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { ChildPeer } from '../src/harness/child-peer.ts'
import { freePort, startDestinationServer } from '../src/harness/destination-server.ts'
import { keypairFile } from '../src/harness/key-file.ts'
import { overrideSource } from '../src/harness/override-source.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type PlcGate, startPlcGate } from '../src/harness/plc-gate.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import { TestTokenAuth } from '../src/harness/test-auth.ts'
import { TRANSFER_SCOPES as SCOPES } from '../src/harness/test-authorizer.ts'
import { SqliteAccountStore } from '../src/store/sqlite-account-store.ts'

const SHAPE = { posts: 12, blobSizes: [4000, 9000, 15000] }
const DESTINATION_SCRIPT = join(import.meta.dirname, '../src/harness/destination-process.ts')
const SOURCE_SCRIPT = join(import.meta.dirname, '../src/harness/source-process.ts')

/**
 * Issue 16's kill drill: a PDS process SIGKILLed at each step of completion and started again
 * on the same data. Every run must end with the account active at exactly one PDS, the PLC
 * directory naming that one, the data identical, and the user finishing with at most one
 * ordinary action (entering the code again, or having a new one sent).
 */

/** What every finished drill must show: one live PDS (the new one), named by PLC, same data. */
async function assertMoved(opts: {
  plcUrl: string
  did: string
  account: FixtureAccount
  destUrl: string
  destDir: string
  done: InboundTransfer
  source: SqliteAccountStore
}) {
  expect(opts.done.failure).toBeUndefined()
  expect(opts.done).toMatchObject({ status: 'completed', stage: 'activated' })
  const doc = await new plc.Client(opts.plcUrl).getDocumentData(opts.did)
  expect(doc.services.atproto_pds?.endpoint).toBe(opts.destUrl)
  expect(doc.verificationMethods.atproto).toBe(opts.done.signingKey)
  const destRotation = await keypairFile(join(opts.destDir, 'rotation.key'))
  expect(doc.rotationKeys).toEqual([opts.account.recoveryKey.did(), destRotation.did()])
  expect((await opts.source.getAccount(opts.did))?.status).toBe('deactivated')
  const landed = await SqliteAccountStore.open(opts.destDir)
  try {
    expect((await landed.getAccount(opts.did))?.status).toBe('active')
    expect(Buffer.from(await landed.exportCar(opts.did))).toEqual(
      Buffer.from(await opts.source.exportCar(opts.did)),
    )
    for (const [cid, bytes] of opts.account.blobs) {
      const chunks: Uint8Array[] = []
      for await (const c of (await landed.openBlob(opts.did, cid)) ?? []) chunks.push(c)
      expect(Buffer.concat(chunks).equals(Buffer.from(bytes)), cid).toBe(true)
    }
    expect(await landed.getPreferences(opts.did)).toEqual(await opts.source.getPreferences(opts.did))
  } finally {
    landed.close()
  }
}

describe('the destination killed at each step of completion', () => {
  let plcDir: PlcDirectory
  let gate: PlcGate
  let source: SourceServer
  /** While set, the source's deactivation (inside completeTransfer) waits for it. */
  let deactivation: { reached: () => void; release: Promise<void> } | undefined
  const dirs: string[] = []

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    gate = await startPlcGate(plcDir.url)
    source = await startSourceServer({
      plc: plcDir,
      wrapSource: (store) =>
        overrideSource(store, {
          async deactivate(did, options) {
            const held = deactivation
            if (held) {
              held.reached()
              await held.release
            }
            return store.deactivate(did, options)
          },
        }),
    })
  }, 60_000)

  afterAll(async () => {
    await source?.close()
    await gate?.close()
    await plcDir?.close()
    for (const dir of dirs) await rm(dir, { recursive: true, force: true })
  })

  /**
   * Runs one drill: imports an account in a destination process, starts completion, waits
   * for `killPoint` (set up by `arm`), SIGKILLs the destination, lets the world go on
   * (`disarm`), starts the destination again and waits for it to finish on its own.
   */
  async function drill(arm: () => Promise<void>, disarm: () => void) {
    const account = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: SHAPE,
    })
    const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-kill-'))
    dirs.push(dir)
    const port = await freePort()
    const url = `http://127.0.0.1:${port}`
    const env = {
      // The destination reaches PLC through the gate, the source directly.
      PLC_URL: gate.url,
      DEST_DIR: dir,
      DEST_PORT: String(port),
      SOURCE_URL: source.url,
      SOURCE_TOKEN: source.auth.issue(
        { did: account.did, clientId: `${url}/.well-known/oauth-client-metadata/migration` },
        SCOPES,
      ),
    }
    const first = ChildPeer.fork<{ url: string }>(DESTINATION_SCRIPT, env)
    try {
      await first.ready
      const started = await first.call<InboundTransfer>({ start: account.did })
      expect(await first.call<InboundTransfer>({ wait: started.transferId })).toMatchObject({
        stage: 'awaitingPlcToken',
      })
      const token = source.store.outbox.filter((m) => m.did === account.did).at(-1)?.token
      const killPoint = arm()
      // Never answered: the process dies first.
      void first.call({ complete: started.transferId, plcToken: token }).catch(() => {})
      await killPoint
    } finally {
      await first.kill()
      disarm()
    }
    const second = ChildPeer.fork<{ recovered: InboundTransfer[] }>(DESTINATION_SCRIPT, env)
    try {
      const { recovered } = await second.ready
      const transferId = recovered[0]?.transferId as string
      expect(recovered).toHaveLength(1)
      const done = await second.call<InboundTransfer>({ wait: transferId })
      await assertMoved({
        plcUrl: plcDir.url,
        did: account.did,
        account,
        destUrl: url,
        destDir: dir,
        done,
        source: source.store,
      })
    } finally {
      await second.kill()
    }
  }

  it('while the source signs (deactivation in progress): the restarted destination gets the same operation and finishes', async () => {
    let release = () => {}
    await drill(
      () =>
        new Promise<void>((reached) => {
          deactivation = { reached, release: new Promise<void>((r) => (release = r)) }
        }),
      () => {
        deactivation = undefined
        release()
      },
    )
  }, 90_000)

  it('while its PLC operation is in flight and never reaches PLC: the restarted destination submits it again', async () => {
    await drill(
      async () => {
        gate.mode = 'drop'
        await gate.held()
      },
      () => {
        gate.mode = 'open'
      },
    )
  }, 90_000)

  it('after PLC accepted its operation, before it heard so: the restarted destination sees PLC names it and activates', async () => {
    const posts = gate.posts
    await drill(
      async () => {
        gate.mode = 'swallow'
        expect((await gate.held()).status).toBe(200)
      },
      () => {
        gate.mode = 'open'
      },
    )
    // PLC is asked before anything is sent again: the accepted operation went out once.
    expect(gate.posts - posts).toBe(1)
  }, 90_000)
})

describe('the source killed during completeTransfer', () => {
  let plcDir: PlcDirectory
  let sourceDir: string
  let port: number
  let store: SqliteAccountStore
  const secret = randomBytes(32)
  const auth = new TestTokenAuth(secret)

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    sourceDir = await mkdtemp(join(tmpdir(), 'pds-transfer-kill-source-'))
    port = await freePort()
    store = await SqliteAccountStore.open(sourceDir)
  }, 60_000)

  afterAll(async () => {
    store?.close()
    await plcDir?.close()
    if (sourceDir) await rm(sourceDir, { recursive: true, force: true })
  })

  const startSource = (holdAt?: string) =>
    ChildPeer.fork<{ url: string }>(SOURCE_SCRIPT, {
      PLC_URL: plcDir.url,
      SOURCE_DIR: sourceDir,
      SOURCE_PORT: String(port),
      AUTH_SECRET: secret.toString('hex'),
      ...(holdAt && { HOLD_AT: holdAt }),
    })

  /** The code the source last "emailed" (its outbox is the killed process's memory). */
  const lastCode = (did: string) =>
    (store.db.prepare('SELECT token FROM plc_token WHERE did = ?').get(did) as { token: string } | undefined)
      ?.token

  /**
   * Kills the source where `holdAt` stops completeTransfer, checks the destination names the
   * failure and is back at the code step, restarts the source, then lets the user act.
   */
  async function drill(holdAt: string, userAction: 'same code' | 'new code') {
    const sourceUrl = `http://127.0.0.1:${port}`
    const account = await buildAccount(store, {
      plcUrl: plcDir.url,
      pdsUrl: sourceUrl,
      pdsRotationKey: await keypairFile(join(sourceDir, 'rotation.key')),
      shape: SHAPE,
    })
    const dest = await startDestinationServer({
      plc: plcDir,
      limits: { retry: { attempts: 3, baseDelayMs: 20 } },
    })
    let running = startSource(holdAt)
    try {
      await running.ready
      const client = bearerSourceClient(
        sourceUrl,
        auth.issue({ did: account.did, clientId: dest.clientId }, SCOPES),
      )
      const started = await dest.engine.start({ did: account.did, client })
      expect((await dest.engine.wait(started.transferId)).stage).toBe('awaitingPlcToken')
      const code = lastCode(account.did) as string
      const held = new Promise((resolve) =>
        running.child.on('message', (m: { held?: string }) => m.held && resolve(m.held)),
      )
      const completing = dest.engine.complete(started.transferId, { plcToken: code })
      expect(await held).toBe(holdAt)
      await running.kill()

      // Named, and back where the user has a next action; nothing moved at PLC.
      const err = await completing.then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(err).toBeInstanceOf(EngineError)
      expect((err as EngineError).code).toBe('SourceUnreachable')
      expect(await dest.engine.get(started.transferId)).toMatchObject({
        status: 'importing',
        stage: 'awaitingPlcToken',
        failure: { reason: 'SourceUnreachable' },
      })
      const doc = await new plc.Client(plcDir.url).getDocumentData(account.did)
      expect(doc.services.atproto_pds?.endpoint).toBe(sourceUrl)
      expect(await dest.sink.isActive(account.did)).toBe(false)

      running = startSource()
      await running.ready
      let plcToken = code
      if (userAction === 'new code') {
        await dest.engine.requestPlcToken(started.transferId)
        plcToken = lastCode(account.did) as string
        expect(plcToken).not.toBe(code)
      }
      const done = await dest.engine.complete(started.transferId, { plcToken })
      await assertMoved({
        plcUrl: plcDir.url,
        did: account.did,
        account,
        destUrl: dest.url,
        destDir: dest.dir,
        done,
        source: store,
      })
    } finally {
      await running.kill()
      await dest.close()
    }
  }

  it('after it took the code, before deactivating: the same code finishes the move', async () => {
    await drill('deactivate', 'same code')
  }, 90_000)

  it('after deactivating, before signing: a new code finishes the move', async () => {
    await drill('sign', 'new code')
  }, 90_000)

  it('after storing the signed operation, before answering: the same code gets the same operation', async () => {
    await drill('answer', 'same code')
  }, 90_000)
})
