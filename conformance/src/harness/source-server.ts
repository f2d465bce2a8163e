import { mkdtemp, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Secp256k1Keypair } from '@atproto/crypto'
import {
  type AccountSource,
  type PermissionedRepoHost,
  type SourcePluginOptions,
  type SourceTransferStore,
  SqliteTransferStore,
  sourcePlugin,
} from '@pds-transfer/source'
import Fastify, { type FastifyInstance } from 'fastify'
import { SqliteAccountStore } from '../store/sqlite-account-store.ts'
import { SqliteSpaceStore } from '../store/sqlite-space-store.ts'
import { keypairFile } from './key-file.ts'
import type { PlcDirectory } from './plc-directory.ts'
import { registerSqliteSyncRoutes } from './sqlite-sync-routes.ts'
import { TestTokenAuth } from './test-auth.ts'
import type { TestSpaceAuth } from './test-space-auth.ts'

/** A sending PDS for tests: our source plugin over the SQLite store, on loopback. */
export interface SourceServer {
  url: string
  app: FastifyInstance
  store: SqliteAccountStore
  transfers: SqliteTransferStore
  auth: TestTokenAuth
  plc: Pick<PlcDirectory, 'url' | 'close'>
  rotationKey: Secp256k1Keypair
  serviceDid: string
  /** With `withSpaces`: the store's permissioned data and the verifier of its 0016 methods. */
  spaces?: SqliteSpaceStore
  spaceAuth?: TestSpaceAuth
  close(): Promise<void>
}

/** Options of `startSourceServer`: the plugin's, plus the test harness's own. */
export type SourceServerOptions = Partial<Omit<SourcePluginOptions, 'source' | 'store' | 'auth' | 'plc'>> & {
  plc?: Pick<PlcDirectory, 'url' | 'close'>
  /** Wraps the store the plugin sees (fault injection). */
  wrapSource?: (store: SqliteAccountStore) => AccountSource
  /** Keep the data here (kept on close) instead of a fresh temporary directory. */
  dir?: string
  /** Fixed port (default: any free one). */
  port?: number
  /** Token verifier (default: a fresh one); a restarted source passes one with the same secret. */
  auth?: TestTokenAuth
  /** Wraps the transfer records the plugin sees (a crash drill holds a write). */
  wrapTransfers?: (store: SqliteTransferStore) => SourceTransferStore
  /**
   * Host permissioned data (proposal 0016) in the store and serve its methods (the plugin's
   * `spaces`, so a draft destination is offered `permissioned-data`); `wrapSpaceHost` wraps the
   * repo host the reads see (a tampering source).
   */
  withSpaces?: boolean
  wrapSpaceHost?: (host: PermissionedRepoHost) => PermissionedRepoHost
  /** Serve the sync endpoints a draft destination pulls from (`registerSqliteSyncRoutes`). */
  sync?: boolean
}

export async function startSourceServer(options: SourceServerOptions = {}): Promise<SourceServer> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'pds-transfer-source-')))
  // Loaded only when needed: the PLC server (express, its database layer) is ~70 MiB that a source
  // process given a directory URL (the benchmarks' measured sources) must not carry.
  const plc = options.plc ?? (await (await import('./plc-directory.ts')).startPlcDirectory())
  const store = await SqliteAccountStore.open(dir)
  const transfers = new SqliteTransferStore(join(dir, 'transfers.sqlite'))
  const auth = options.auth ?? new TestTokenAuth()
  const rotationKey = await keypairFile(join(dir, 'rotation.key'))
  // Tests close servers while peers in the same process still hold keep-alive sockets.
  const app = Fastify({ logger: false, forceCloseConnections: true })
  const serviceDid = 'did:web:source.test'
  const spaces = options.withSpaces ? new SqliteSpaceStore(store) : undefined
  const spaceAuth = spaces && auth.spaceAuth()
  const {
    wrapSource,
    wrapTransfers,
    withSpaces: _withSpaces,
    wrapSpaceHost,
    sync,
    plc: _plc,
    dir: _dir,
    port: _port,
    auth: _auth,
    ...pluginOptions
  } = options
  await app.register(sourcePlugin, {
    serviceDid,
    ...pluginOptions,
    source: wrapSource ? wrapSource(store) : store,
    store: wrapTransfers ? wrapTransfers(transfers) : transfers,
    auth,
    plc: { directoryUrl: plc.url, rotationKey },
    ...(spaces &&
      spaceAuth && {
        spaces: {
          host: wrapSpaceHost ? wrapSpaceHost(spaces) : spaces,
          simplespace: spaces,
          auth: spaceAuth,
        },
      }),
  })
  if (sync) registerSqliteSyncRoutes(app, { store, auth, rotationKey: rotationKey.did() })
  await app.listen({ host: '127.0.0.1', port: options.port ?? 0 })
  const { port } = app.server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    app,
    store,
    transfers,
    auth,
    plc,
    rotationKey,
    serviceDid,
    ...(spaces && spaceAuth && { spaces, spaceAuth }),
    async close() {
      await app.close()
      transfers.close()
      store.close()
      if (!options.plc) await plc.close()
      if (!options.dir) await rm(dir, { recursive: true, force: true })
    },
  }
}
