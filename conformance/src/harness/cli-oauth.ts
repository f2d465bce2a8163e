import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
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

/** A DPoP-bound OAuth session at the PDS under test, as the suite's client. */
export interface CliOAuthSession {
  client: SourceClient
  /** The account the session is for (the token's `sub`). */
  did: string
  /** The PDS the tokens are for (the token's `aud`). */
  aud: string
  grantedScope: string
}

/**
 * Signs the test account in at its PDS's own authorization server the way a destination would:
 * a loopback OAuth client (@atproto/oauth-client-node, public, DPoP) asking for `scope`. With a
 * password, the sign-in and consent are done headlessly (the reference PDS's sign-in page API,
 * as the tests do); without one, `onAuthorizeUrl` is given the URL to open in a browser, and the
 * redirect is awaited on a loopback port. No test-only authentication is involved.
 */
export async function cliOAuthSession(params: {
  /** Handle or DID of the test account (where the sign-in starts). */
  identifier: string
  /** What is typed into the sign-in form (default `identifier`): the handle or email. */
  username?: string
  password?: string
  scope: string
  /** PLC directory the DID is resolved with. */
  plcUrl?: string
  /** Called with the authorization URL when there is no password (interactive sign-in). */
  onAuthorizeUrl?: (url: URL) => void
  /** Longest wait for the interactive sign-in (default 10 minutes). */
  timeoutMs?: number
  /**
   * Loopback port of the redirect URI (default 8789; 0: any free one). It is part of the
   * client_id, and a source tells destinations apart by client_id: runs with the same port are
   * one destination (a new export supersedes the last), other ports are another destination,
   * refused TransferAlreadyActive while the first's transfer is in flight.
   */
  callbackPort?: number
}): Promise<CliOAuthSession> {
  const interactive = params.password === undefined
  const port = params.callbackPort ?? CALLBACK_PORT
  const callbackServer = interactive
    ? await startCallbackServer(port, params.timeoutMs ?? 600_000)
    : undefined
  try {
    // Headless, nothing listens there: the redirect is read from the sign-in's answer.
    const redirect = callbackServer ? `${callbackServer.url}/callback` : `http://127.0.0.1:${port}/callback`
    const sessions = new Map<string, NodeSavedSession>()
    const oauth = new NodeOAuthClient({
      clientMetadata: buildAtprotoLoopbackClientMetadata({
        scope: params.scope as never,
        redirect_uris: [redirect as never],
      }),
      stateStore: memoryStore(new Map<string, NodeSavedState>()),
      sessionStore: memoryStore(sessions),
      requestLock: requestLocalLock,
      allowHttp: true,
      ...(params.plcUrl && { plcDirectoryUrl: params.plcUrl }),
    })
    const authorizeUrl = await oauth.authorize(params.identifier, { scope: params.scope })
    let callback: URLSearchParams
    if (callbackServer) {
      params.onAuthorizeUrl?.(authorizeUrl)
      callback = await callbackServer.received
    } else {
      callback = (
        await headlessAuthorize(authorizeUrl, {
          username: params.username ?? params.identifier,
          password: params.password as string,
        })
      ).searchParams
    }
    const { session } = await oauth.callback(callback)
    const info = await session.getTokenInfo()
    return {
      client: {
        url: info.aud.replace(/\/$/, ''),
        fetch: (path, init) => session.fetchHandler(path, init),
      },
      did: session.did,
      aud: info.aud,
      grantedScope: info.scope ?? '',
    }
  } finally {
    await callbackServer?.close()
  }
}

/** The default loopback port of the CLI's redirect URI. */
export const CALLBACK_PORT = 8789

/** A loopback server that resolves with the query of the first `/callback` request. */
async function startCallbackServer(port: number, timeoutMs: number) {
  let resolve!: (params: URLSearchParams) => void
  let reject!: (err: Error) => void
  const received = new Promise<URLSearchParams>((res, rej) => {
    resolve = res
    reject = rej
  })
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    if (url.pathname !== '/callback') {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' })
    res.end('pds-transfer-conformance: signed in; you can close this window and go back to the terminal.\n')
    resolve(url.searchParams)
  })
  await new Promise<void>((r, j) => {
    server.once('error', j)
    server.listen(port, '127.0.0.1', r)
  })
  const timer = setTimeout(() => reject(new Error(`no sign-in within ${timeoutMs} ms`)), timeoutMs)
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received,
    close: () =>
      new Promise<void>((r) => {
        clearTimeout(timer)
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}
