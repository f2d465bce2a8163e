import type { AddressInfo } from 'node:net'
import {
  buildWellKnown,
  type TransferPublicJwk,
  WELL_KNOWN_CACHE_CONTROL,
  WELL_KNOWN_PATH,
} from '@pds-transfer/core'
import Fastify from 'fastify'

/**
 * A destination's public face as the source sees it: the well-known document
 * with its HPKE keys, at the origin of its OAuth client_id.
 */
export interface KeyHost {
  origin: string
  clientId: string
  keys: TransferPublicJwk[]
  close(): Promise<void>
}

export async function startKeyHost(
  keys: TransferPublicJwk[],
  did = 'did:web:destination.test',
  listen: { host?: string; port?: number } = {},
): Promise<KeyHost> {
  // Tests close servers while peers in the same process still hold keep-alive sockets.
  const app = Fastify({ logger: false, forceCloseConnections: true })
  const host: KeyHost = { origin: '', clientId: '', keys, close: () => app.close() }
  app.get(WELL_KNOWN_PATH, async (_req, reply) => {
    reply.header('cache-control', WELL_KNOWN_CACHE_CONTROL)
    return buildWellKnown({ did, algorithms: ['HPKE-3', 'HPKE-4'], keys: host.keys })
  })
  const bind = listen.host ?? '127.0.0.1'
  await app.listen({ host: bind, port: listen.port ?? 0 })
  const { port } = app.server.address() as AddressInfo
  host.origin = `http://${bind}:${port}`
  host.clientId = `${host.origin}/oauth-client-metadata.json`
  return host
}
