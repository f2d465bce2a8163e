import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import {
  CLIENT_JWKS_PATH,
  CLIENT_LOGO_PATH,
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
    app.get(CLIENT_LOGO_PATH, async (_request, reply) =>
      reply.header('cache-control', 'public, max-age=86400').type('image/svg+xml').send(LOGO),
    )
  },
  { name: '@pds-transfer/destination/oauth-client', fastify: '5.x' },
)

/** The default logo: an account (a box) moving right, in one colour; no text, no external parts. */
const LOGO = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64" role="img" aria-label="Account transfer">
<rect width="64" height="64" rx="12" fill="#1b5e20"/>
<rect x="10" y="20" width="18" height="24" rx="3" fill="none" stroke="#fff" stroke-width="4"/>
<path d="M32 32h18m-7-8 8 8-8 8" fill="none" stroke="#fff" stroke-width="4" stroke-linecap="round" stroke-linejoin="round"/>
</svg>
`
