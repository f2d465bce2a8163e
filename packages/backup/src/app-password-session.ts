import { bearerSourceClient, type SourceClient, SourceError } from '@pds-transfer/destination'

/**
 * The account's own client at its PDS from an app password (`com.atproto.server.createSession`),
 * for what is not public: the preferences. The CLI's way to the account's grant; a service uses
 * an OAuth session with the scope `atproto rpc:app.bsky.actor.getPreferences?aud=*` instead
 * (read-only). Never the account's main password: an app password can be revoked on its own.
 */
export async function appPasswordClient(
  pds: string,
  did: string,
  appPassword: string,
): Promise<SourceClient> {
  const url = pds.replace(/\/+$/, '')
  const res = await fetch(`${url}/xrpc/com.atproto.server.createSession`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ identifier: did, password: appPassword }),
    signal: AbortSignal.timeout(30_000),
  })
  if (!res.ok) throw await SourceError.from(res, 'createSession with the app password')
  const { accessJwt } = (await res.json()) as { accessJwt?: unknown }
  if (typeof accessJwt !== 'string')
    throw new SourceError(502, 'InvalidResponse', 'createSession: no accessJwt')
  return bearerSourceClient(url, accessJwt)
}
