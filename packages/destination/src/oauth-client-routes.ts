import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import {
  CLIENT_JWKS_PATH,
  CLIENT_METADATA_PATH,
  type OAuthSourceAuthorizer,
} from './oauth-source-authorizer.ts'

/**
 * Serves the destination's OAuth client metadata and public keys, which source authorization
 * servers fetch by client_id. A loopback (development) client has none to serve.
 */
export const oauthClientRoutes = fp(
  async (app: FastifyInstance, opts: { authorizer: OAuthSourceAuthorizer }) => {
    if (!opts.authorizer.clientId.startsWith('https:')) return
    app.get(CLIENT_METADATA_PATH, async (_request, reply) => {
      reply.header('cache-control', 'public, max-age=600')
      return opts.authorizer.metadata
    })
    app.get(CLIENT_JWKS_PATH, async (_request, reply) => {
      reply.header('cache-control', 'public, max-age=600')
      return opts.authorizer.jwks
    })
  },
  { name: '@pds-transfer/destination/oauth-client', fastify: '5.x' },
)
