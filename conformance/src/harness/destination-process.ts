/**
 * A destination PDS in its own process, for tests that kill it mid-transfer (`kill -9`) and
 * start it again on the same directory and port. Configured by environment:
 * PLC_URL, DEST_DIR, DEST_PORT, SOURCE_URL, SOURCE_TOKEN (a bearer token the source accepts,
 * standing in for a durable OAuth session) or SOURCE_OAUTH (see `client`), RESTORE_SESSION (optional:
 * `0` gives `recover()` no session with the source, as when a stored grant was lost), LIST_BLOBS_LIMIT
 * (optional: CIDs per listBlobs page), SOURCE_VIA (optional: the base URL the source's
 * requests are sent to instead, a fault proxy in front of it), ALGORITHMS (optional, comma-separated). On start
 * it runs `engine.recover()`; then it answers IPC messages `{ id, start: did }`,
 * `{ id, wait: transferId }`, `{ id, complete: transferId, plcToken }`, `{ id, newCode: transferId }`
 * (the user's "email me a new code") and `{ id, rss: true }`
 * with `{ id, result }`. It exits when the test process is gone.
 */

import { join } from 'node:path'
import type { TransferAlgorithm } from '@pds-transfer/core'
import { bearerSourceClient, type SourceClient, SqliteOAuthStore } from '@pds-transfer/destination'
import { peakRssMiB } from '../../../packages/core/bench/peak-rss.ts'
import { exitWithParent } from './child-peer.ts'
import { startDestinationServer } from './destination-server.ts'
import { oauthSourceClient, routeByNsid } from './plain-pds-oauth.ts'

const env = (name: string): string => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is required`)
  return value
}

exitWithParent()
/**
 * The client for the source: a bearer token, or with SOURCE_OAUTH (JSON `{ did, username,
 * password, scope }`) an OAuth session signed in headlessly at the source's own provider, kept
 * in a `SqliteOAuthStore` in DEST_DIR as the product keeps its grants: a restarted destination
 * restores it (a source refuses a new sign-in once it deactivated the account).
 */
let oauth: Promise<SourceClient> | undefined
const client = async (): Promise<SourceClient> => {
  const via = process.env.SOURCE_VIA
  if (process.env.SOURCE_OAUTH) {
    const account = JSON.parse(process.env.SOURCE_OAUTH) as {
      did: string
      username: string
      password: string
      scope: string
    }
    oauth ??= oauthSourceClient({
      pdsUrl: env('SOURCE_URL'),
      plcUrl: env('PLC_URL'),
      did: account.did,
      account: { username: account.username, password: account.password },
      scope: account.scope,
      sessionStore: new SqliteOAuthStore(join(env('DEST_DIR'), 'oauth.sqlite')).sessions,
      ...(via && { fetch: routeByNsid(env('SOURCE_URL'), () => ({ '*': via })) }),
    }).then((signedIn) => signedIn.client)
    return oauth
  }
  const direct = bearerSourceClient(env('SOURCE_URL'), env('SOURCE_TOKEN'))
  if (!via) return direct
  const routed = bearerSourceClient(via, env('SOURCE_TOKEN'))
  return { url: direct.url, fetch: routed.fetch }
}
const dest = await startDestinationServer({
  plc: { url: env('PLC_URL') },
  dir: env('DEST_DIR'),
  port: Number(env('DEST_PORT')),
  restoreClient: async (t) =>
    t.sourceUrl === env('SOURCE_URL') && process.env.RESTORE_SESSION !== '0' ? client() : undefined,
  ...(process.env.LIST_BLOBS_LIMIT && { listBlobsLimit: Number(process.env.LIST_BLOBS_LIMIT) }),
  ...(process.env.ALGORITHMS && { algorithms: process.env.ALGORITHMS.split(',') as TransferAlgorithm[] }),
})
const recovered = await dest.engine.recover()

type Message = {
  id: number
  start?: string
  wait?: string
  complete?: string
  plcToken?: string
  newCode?: string
  rss?: boolean
}
process.on('message', (msg: Message) => {
  const run = async () => {
    if (msg.start) return dest.engine.start({ did: msg.start, client: await client() })
    if (msg.wait) return dest.engine.wait(msg.wait)
    if (msg.complete) return dest.engine.complete(msg.complete, { plcToken: msg.plcToken ?? '' })
    if (msg.newCode) return dest.engine.requestPlcToken(msg.newCode)
    if (msg.rss) return { maxRssMiB: peakRssMiB() }
    throw new Error(`unknown message ${JSON.stringify(msg)}`)
  }
  run().then(
    (result) => process.send?.({ id: msg.id, result }),
    (err: unknown) => process.send?.({ id: msg.id, error: String(err) }),
  )
})
process.send?.({ ready: true, url: dest.url, recovered })
