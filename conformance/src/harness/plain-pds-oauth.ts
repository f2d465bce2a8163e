import {
  buildAtprotoLoopbackClientMetadata,
  NodeOAuthClient,
  type NodeSavedSession,
  type NodeSavedState,
  requestLocalLock,
} from '@atproto/oauth-client-node'
import type { SourceClient } from '@pds-transfer/destination'
import { headlessAuthorize } from './headless-oauth.ts'
import { memoryStore } from './memory-store.ts'

/**
 * A DPoP-bound OAuth session of `account` at a PDS's own authorization server (a loopback
 * client asking for `scope`, signed in headlessly), as a `SourceClient`: how a destination reads
 * a plain PDS without the user's password. Returns the scope the server granted too.
 */
export async function oauthSourceClient(params: {
  pdsUrl: string
  plcUrl: string
  did: string
  account: { username: string; password: string }
  scope: string
  /**
   * The HTTP client under the session's DPoP layer (default: global fetch). The proof is made
   * for the URL asked (the PDS's own, as its verifier expects); this fetch may send the request
   * elsewhere, e.g. through a fault proxy (`routeByNsid`).
   */
  fetch?: typeof globalThis.fetch
  /**
   * Where sessions are kept (default: memory). A session already there for `did` is restored
   * instead of signing in again, as a restarted destination restores its durable grant.
   */
  sessionStore?: SimpleSessionStore
}): Promise<{ client: SourceClient; grantedScope: string }> {
  const sessionStore = params.sessionStore ?? memoryStore(new Map<string, NodeSavedSession>())
  const client = new NodeOAuthClient({
    clientMetadata: buildAtprotoLoopbackClientMetadata({
      scope: params.scope as never,
      redirect_uris: ['http://127.0.0.1:9/callback'],
    }),
    stateStore: memoryStore(new Map<string, NodeSavedState>()),
    sessionStore,
    requestLock: requestLocalLock,
    allowHttp: true,
    plcDirectoryUrl: params.plcUrl,
    ...(params.fetch && { fetch: params.fetch }),
  })
  const session = (await sessionStore.get(params.did))
    ? await client.restore(params.did)
    : await signIn(client, params)
  const grantedScope = (await session.getTokenInfo()).scope ?? ''
  return {
    client: {
      url: params.pdsUrl.replace(/\/$/, ''),
      fetch: (path, init) => session.fetchHandler(path, init),
    },
    grantedScope,
  }
}

/** A durable store of OAuth sessions by DID (e.g. `SqliteOAuthStore.sessions`). */
export interface SimpleSessionStore {
  get(key: string): Promise<NodeSavedSession | undefined>
  set(key: string, value: NodeSavedSession): Promise<void>
  del(key: string): Promise<void>
}

/** Signs in headlessly at the PDS's own provider; returns the new session. */
async function signIn(
  client: NodeOAuthClient,
  params: { did: string; scope: string; account: { username: string; password: string } },
) {
  const authorizeUrl = await client.authorize(params.did, { scope: params.scope })
  const callback = await headlessAuthorize(authorizeUrl, params.account)
  return (await client.callback(callback.searchParams)).session
}

/**
 * A fetch that sends XRPC requests to `pdsUrl` for the NSIDs named in `via()` (`'*'`: any
 * other) to that base URL instead (a fault proxy in front of the PDS), everything else as asked. `via` is read at each
 * request, so a test may reroute a session mid-move.
 */
export function routeByNsid(pdsUrl: string, via: () => Record<string, string>): typeof globalThis.fetch {
  const origin = new URL(pdsUrl).origin
  return async (input, init) => {
    const request = new Request(input, init)
    const url = new URL(request.url)
    const routes = via()
    const base =
      url.origin === origin && url.pathname.startsWith('/xrpc/')
        ? (routes[url.pathname.slice(6)] ?? routes['*'])
        : undefined
    if (!base) return fetch(request)
    // A body is sent as bytes: a stream body would need `duplex` and go chunked.
    const body =
      request.method === 'GET' || request.method === 'HEAD' ? undefined : await request.arrayBuffer()
    return fetch(`${base}${url.pathname}${url.search}`, {
      method: request.method,
      headers: request.headers,
      signal: request.signal,
      ...(body && { body }),
    })
  }
}
