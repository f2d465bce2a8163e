import {
  buildAtprotoLoopbackClientMetadata,
  JoseKey,
  type Key,
  NodeOAuthClient,
  OAuthCallbackError,
  type OAuthClientMetadataInput,
  type OAuthSession,
  requestLocalLock,
} from '@atproto/oauth-client-node'
import {
  DRAFT_OAUTH_SCOPE,
  MIGRATION_CLIENT_SCOPE,
  PLAIN_PDS_OAUTH_SCOPE,
  TRANSFER_OAUTH_SCOPE,
} from '@pds-transfer/core'
import { plainPdsScope, type SpaceScopePolicy } from './plain-oauth-scope.ts'
import { AuthorizationNotCompleted, type SourceAuthorizer } from './source-authorizer.ts'
import type { SourceClient } from './source-client.ts'
import { type SourceDialect, sourceDialect } from './source-dialect.ts'
import type { SqliteOAuthStore } from './sqlite-oauth-store.ts'

/**
 * Where the client metadata of a destination on a public (https) URL is served: the
 * conventional path, because the reference consent screen (@atproto/oauth-provider-ui) then
 * names an untrusted client by its host alone ("pds.example.com"), and by the whole URL
 * otherwise (spec/decisions.md D26).
 */
export const CLIENT_METADATA_PATH = '/oauth-client-metadata.json'
export const CLIENT_JWKS_PATH = '/oauth-client-jwks.json'
/** The default logo in the client metadata (sources show a logo only for clients they trust). */
export const CLIENT_LOGO_PATH = '/oauth-client-logo.svg'
/** The /migrate UI's OAuth redirect. */
export const CALLBACK_PATH = '/migrate/callback'

export interface OAuthSourceAuthorizerOptions {
  /** The destination's public URL. `http://localhost` or `http://127.0.0.1` make it a loopback (development) client. */
  publicUrl: string
  store: SqliteOAuthStore
  /** PLC directory for resolving account DIDs (default https://plc.directory). */
  plcDirectoryUrl?: string
  /** Allow plain-HTTP authorization servers and PDSes (development only). */
  allowHttp?: boolean
  /**
   * What the source's consent screen shows about who asks (public clients only: a loopback
   * development client has no metadata document, so sources show a generic "an application
   * on your device"). Default name: "<host> account transfer".
   */
  clientName?: string
  /** An https URL of the operator's logo (default: a plain "move" mark served at `CLIENT_LOGO_PATH`). */
  logoUri?: string
  /** The operator's terms of service and privacy policy (https). */
  tosUri?: string
  policyUri?: string
  /**
   * When a plain PDS is asked for `SPACE_MIGRATION_SCOPE` (its permissioned data): `metadata`
   * (default) when its authorization server lists it, `always`, or `never`.
   */
  spaceScope?: SpaceScopePolicy
}

/**
 * The destination as OAuth client of the source's authorization server
 * (`@atproto/oauth-client-node`: PAR, PKCE, DPoP). On a public URL it is a confidential web
 * client (`private_key_jwt`, metadata at `/oauth-client-metadata.json`, whose
 * origin is where sources look for our transfer keys); on a loopback URL it is an atproto
 * loopback client, which sources accept in development only. Sessions are kept in a durable
 * store, so a restarted destination resumes its transfers (`restore`).
 */
/** The scope asked of each kind of source (spec/dialect-plain-pds.md, spec/dialect-draft.md §7). */
const SCOPE_OF: Record<SourceDialect, string> = {
  v1: TRANSFER_OAUTH_SCOPE,
  draft: DRAFT_OAUTH_SCOPE,
  plain: PLAIN_PDS_OAUTH_SCOPE,
}

export class OAuthSourceAuthorizer implements SourceAuthorizer {
  private constructor(
    private readonly client: NodeOAuthClient,
    /** The client metadata, served at `CLIENT_METADATA_PATH` (public clients) */
    readonly metadata: OAuthClientMetadataInput,
    private readonly keys: Key[],
    private readonly spaceScope: SpaceScopePolicy,
  ) {}

  static async create(options: OAuthSourceAuthorizerOptions): Promise<OAuthSourceAuthorizer> {
    const base = new URL(options.publicUrl)
    const loopback =
      base.protocol === 'http:' && (base.hostname === 'localhost' || base.hostname === '127.0.0.1')
    const keys = loopback ? [] : [await loadClientKey(options.store)]
    const metadata: OAuthClientMetadataInput = loopback
      ? buildAtprotoLoopbackClientMetadata({
          scope: MIGRATION_CLIENT_SCOPE as never,
          // Loopback redirects must use the IP literal (RFC 8252 §7.3).
          redirect_uris: [`http://127.0.0.1:${base.port || 80}${CALLBACK_PATH}`],
        })
      : {
          client_id: `${base.origin}${CLIENT_METADATA_PATH}`,
          client_name: options.clientName ?? `${base.hostname} account transfer`,
          // The reference provider requires client_uri to be a parent of client_id (D26); its
          // consent screen does not show it.
          client_uri: base.origin,
          logo_uri: options.logoUri ?? `${base.origin}${CLIENT_LOGO_PATH}`,
          ...(options.tosUri && { tos_uri: options.tosUri }),
          ...(options.policyUri && { policy_uri: options.policyUri }),
          redirect_uris: [`${base.origin}${CALLBACK_PATH}`],
          scope: MIGRATION_CLIENT_SCOPE,
          grant_types: ['authorization_code', 'refresh_token'],
          response_types: ['code'],
          application_type: 'web',
          token_endpoint_auth_method: 'private_key_jwt',
          token_endpoint_auth_signing_alg: 'ES256',
          dpop_bound_access_tokens: true,
          jwks_uri: `${base.origin}${CLIENT_JWKS_PATH}`,
        }
    const client = new NodeOAuthClient({
      clientMetadata: metadata,
      keyset: keys,
      stateStore: options.store.states,
      sessionStore: options.store.sessions,
      requestLock: requestLocalLock,
      allowHttp: options.allowHttp ?? false,
      ...(options.plcDirectoryUrl && { plcDirectoryUrl: options.plcDirectoryUrl }),
    })
    return new OAuthSourceAuthorizer(client, metadata, keys, options.spaceScope ?? 'metadata')
  }

  get clientId(): string {
    return this.metadata.client_id as string
  }

  /** Our public signing keys (served at `CLIENT_JWKS_PATH` for a public client). */
  get jwks(): { keys: unknown[] } {
    return { keys: this.keys.map((k) => k.publicJwk) }
  }

  /**
   * Asks for `scope`, or the scopes of the source's dialect: a plain PDS's own endpoints, the
   * draft's, or the v1 ones. `returnTo` travels in the OAuth state, which the client library
   * keeps in our state store (the browser carries only its random key), so it cannot be changed
   * on the way.
   */
  async authorize(params: {
    did: string
    sourceUrl: string
    scope?: string
    returnTo?: string
  }): Promise<URL> {
    const dialect = params.scope ? undefined : await sourceDialect(params.sourceUrl, params.did)
    const scope =
      params.scope ??
      (dialect === 'plain'
        ? await plainPdsScope(params.sourceUrl, this.spaceScope)
        : SCOPE_OF[dialect ?? 'v1'])
    return this.client.authorize(params.did, {
      scope,
      ...(params.returnTo && { state: JSON.stringify({ returnTo: params.returnTo }) }),
    })
  }

  async callback(query: URLSearchParams): Promise<{ did: string; client: SourceClient; returnTo?: string }> {
    try {
      const { session, state } = await this.client.callback(query)
      const returnTo = returnPath(state)
      return { did: session.did, client: await sessionClient(session), ...(returnTo && { returnTo }) }
    } catch (err) {
      const returnTo = err instanceof OAuthCallbackError ? returnPath(err.state) : undefined
      if (!returnTo) throw err
      throw new AuthorizationNotCompleted(
        returnTo,
        (err as OAuthCallbackError).params.get('error') === 'access_denied',
        (err as Error).message,
      )
    }
  }

  /** The stored session for `did`, refreshed if needed; undefined if there is none (or it was revoked). */
  async restore(did: string): Promise<SourceClient | undefined> {
    return (await this.session(did))?.client
  }

  /** Like `restore`, with the scope the source granted (it may grant less than was asked). */
  async session(did: string): Promise<{ client: SourceClient; scope: string } | undefined> {
    try {
      const session = await this.client.restore(did)
      const { scope } = await session.getTokenInfo()
      return { client: await sessionClient(session), scope: scope ?? '' }
    } catch {
      return undefined
    }
  }

  /** Ends our session for `did` at its source (revokes the tokens); nothing is kept. */
  async signOut(did: string): Promise<void> {
    await this.client.revoke(did).catch(() => undefined)
  }
}

/** The path a flow asked to come back to, from the OAuth state it was started with. */
function returnPath(state: string | null | undefined): string | undefined {
  if (!state) return undefined
  try {
    const { returnTo } = JSON.parse(state) as { returnTo?: unknown }
    // Only a path of ours: never an address elsewhere.
    return typeof returnTo === 'string' && returnTo.startsWith('/') && !returnTo.startsWith('//')
      ? returnTo
      : undefined
  } catch {
    return undefined
  }
}

async function sessionClient(session: OAuthSession): Promise<SourceClient> {
  const { aud } = await session.getTokenInfo()
  return {
    url: aud.replace(/\/$/, ''),
    fetch: (path, init) => session.fetchHandler(path, init),
  }
}

/** Our client-authentication key, made once and kept in the OAuth store. */
async function loadClientKey(store: SqliteOAuthStore): Promise<Key> {
  const saved = await store.clientKeys.get('client')
  if (saved) return JoseKey.fromJWK(saved)
  const key = await JoseKey.generate(['ES256'], `migration-${Date.now().toString(36)}`)
  const jwk = key.privateJwk
  if (!jwk) throw new Error('generated client key has no private part')
  await store.clientKeys.set('client', jwk as unknown as Record<string, unknown>)
  return key
}
