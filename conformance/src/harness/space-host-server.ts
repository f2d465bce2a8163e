import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  type PermissionedRepoHost,
  registerSimpleSpaceRoutes,
  registerSpaceReadRoutes,
} from '@pds-transfer/source'
import Fastify, { type FastifyInstance } from 'fastify'
import { SqliteAccountStore } from '../store/sqlite-account-store.ts'
import { SqliteSpaceStore } from '../store/sqlite-space-store.ts'
import { freePort } from './destination-server.ts'
import { TestSpaceAuth } from './test-space-auth.ts'

/** The SQLite test PDS serving proposal 0016's repo-host and simplespace methods, on loopback. */
export interface SpaceHostServer {
  url: string
  app: FastifyInstance
  accounts: SqliteAccountStore
  spaces: SqliteSpaceStore
  auth: TestSpaceAuth
  close(): Promise<void>
}

/**
 * Starts one in a fresh temporary directory (removed on close). `wrapHost` wraps the repo host
 * the read routes see (a tampering source).
 */
export async function startSpaceHostServer(
  options: {
    wrapHost?: (host: PermissionedRepoHost) => PermissionedRepoHost
    /** Space authorities' keys (did:key by DID), as their DID documents name them: credentials are accepted when given. */
    authorityKeys?: Map<string, string>
  } = {},
): Promise<SpaceHostServer> {
  const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-spaces-'))
  const accounts = await SqliteAccountStore.open(dir)
  const spaces = new SqliteSpaceStore(accounts)
  const auth = new TestSpaceAuth()
  const app = Fastify({ logger: false, forceCloseConnections: true })
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const keys = options.authorityKeys
  registerSpaceReadRoutes(app, {
    host: options.wrapHost ? options.wrapHost(spaces) : spaces,
    auth,
    ...(keys && {
      credentials: {
        serviceUrl: url,
        resolveKey: async (did: string) => {
          const key = keys.get(did)
          if (!key) throw new Error(`no key known for ${did}`)
          return key
        },
      },
    }),
  })
  registerSimpleSpaceRoutes(app, { host: spaces, auth })
  await app.listen({ host: '127.0.0.1', port })
  return {
    url,
    app,
    accounts,
    spaces,
    auth,
    async close() {
      await app.close()
      accounts.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
}
