import { mkdtemp, rm } from 'node:fs/promises'
import { type AddressInfo, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Secp256k1Keypair } from '@atproto/crypto'
import * as plc from '@did-plc/lib'
import type { TransferAlgorithm } from '@pds-transfer/core'
import {
  type DestinationPluginOptions,
  destinationPlugin,
  type EngineLimits,
  KeyRing,
  migratePlugin,
  PlcDidResolver,
  type SourceAuthorizer,
  SqliteInboundTransferStore,
  SqliteKeyStore,
  TransferEngine,
  type TransferEngineOptions,
} from '@pds-transfer/destination'
import Fastify, { type FastifyInstance } from 'fastify'
import { SqliteAccountSink } from '../store/sqlite-account-sink.ts'
import { SqliteAccountStore } from '../store/sqlite-account-store.ts'
import { SqliteSpaceStore } from '../store/sqlite-space-store.ts'
import { keypairFile } from './key-file.ts'
import type { PlcDirectory } from './plc-directory.ts'
import { registerStartHook } from './start-hook.ts'

/** A receiving PDS for tests: our engine and routes over the SQLite store, on loopback. */
export interface DestinationServer {
  url: string
  /** OAuth client_id the source sees (its origin hosts our well-known keys). */
  clientId: string
  app: FastifyInstance
  store: SqliteAccountStore
  sink: SqliteAccountSink
  /** With `spaces`: where moved permissioned data lands. */
  spaces?: SqliteSpaceStore
  transfers: SqliteInboundTransferStore
  keys: KeyRing
  engine: TransferEngine
  rotationKey: Secp256k1Keypair
  dir: string
  close(): Promise<void>
}

export async function startDestinationServer(options: {
  plc: Pick<PlcDirectory, 'url'>
  limits?: Partial<EngineLimits>
  dir?: string
  /** Extensions the engine asks for (default: all; `[]` for a literal 0014 destination). */
  extensions?: string[]
  /** Fixed port (a restarted destination must keep its URL: it is the account's new PDS). */
  port?: number
  /** CIDs per listBlobs page of a sync pull (default the engine's: 1000). */
  listBlobsLimit?: number
  /** HPKE suites to hold keys for, in preference order (default HPKE-3, HPKE-4). */
  algorithms?: TransferAlgorithm[]
  restoreClient?: TransferEngineOptions['restoreClient']
  /** The plugin's PLC rollback watch (default: the plugin's, every 10 minutes). */
  watch?: Pick<DestinationPluginOptions, 'watchEveryMs' | 'onRollback'>
  /** Serve the conformance start hook (test deployments only: it starts imports from anywhere). */
  startHook?: boolean
  /** Import permissioned data (proposal 0016) into the store: a draft pull asks for `permissioned-data`. */
  spaces?: boolean
  /** Serve the `/migrate` UI, signing in at sources with this authorizer. */
  authorizer?: (self: { url: string; clientId: string }) => SourceAuthorizer
}): Promise<DestinationServer> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'pds-transfer-destination-')))
  const store = await SqliteAccountStore.open(dir)
  const sink = new SqliteAccountSink(store)
  const spaces = options.spaces ? new SqliteSpaceStore(store) : undefined
  const transfers = new SqliteInboundTransferStore(join(dir, 'transfers.sqlite'))
  const keyStore = new SqliteKeyStore(join(dir, 'keys.sqlite'))
  const keys = new KeyRing(keyStore, options.algorithms ?? ['HPKE-3', 'HPKE-4'])
  const rotationKey = await keypairFile(join(dir, 'rotation.key'))
  // The engine needs its public URL before the server listens.
  const port = options.port ?? (await freePort())
  const url = `http://127.0.0.1:${port}`
  const resolver = new PlcDidResolver(options.plc.url)
  const engine = new TransferEngine({
    sink,
    store: transfers,
    keys,
    resolver,
    plc: new plc.Client(options.plc.url),
    serviceUrl: url,
    rotationKey: rotationKey.did(),
    // Retries on a cut stream are real, but a test cannot wait for production backoff.
    limits: { retry: { attempts: 3, baseDelayMs: 20 }, ...options.limits },
    ...(options.extensions && { extensions: options.extensions }),
    ...(options.listBlobsLimit && { listBlobsLimit: options.listBlobsLimit }),
    ...(options.restoreClient && { restoreClient: options.restoreClient }),
    ...(spaces && { spaces }),
  })
  // Tests close servers while peers in the same process still hold keep-alive sockets.
  const app = Fastify({ logger: false, forceCloseConnections: true })
  const serviceDid = 'did:web:destination.test'
  const clientId = `${url}/oauth-client-metadata.json`
  await app.register(destinationPlugin, { engine, keys, serviceDid, ...options.watch })
  if (options.startHook) registerStartHook(app, engine)
  if (options.authorizer) {
    await app.register(migratePlugin, {
      engine,
      keys,
      resolver,
      authorizer: options.authorizer({ url, clientId }),
      publicUrl: url,
      serviceDid,
    })
  }
  await app.listen({ host: '127.0.0.1', port })
  return {
    url,
    clientId,
    app,
    store,
    sink,
    ...(spaces && { spaces }),
    transfers,
    keys,
    engine,
    rotationKey,
    dir,
    async close() {
      await engine.close()
      await app.close()
      transfers.close()
      keyStore.close()
      store.close()
      if (!options.dir) await rm(dir, { recursive: true, force: true })
    },
  }
}

/** A port that was free a moment ago on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo
      probe.close(() => resolve(port))
    })
  })
}
