import type { SourceClient } from './source-client.ts'

/** Calls a PDS answers for the signed-in account, which a backup service answers by `did`. */
const BY_ACCOUNT = ['/xrpc/app.bsky.actor.getPreferences', '/xrpc/com.atproto.server.getSession']

/**
 * A `SourceClient` for a copy of one account served over the sync endpoints: the backup read
 * API (`@pds-transfer/backup`), or another tool's getRepo/getBlob service. The calls a PDS
 * answers for the session's account (preferences, email) carry `did`, as a service holding many
 * accounts needs; `token`, if given, is sent as a bearer token (the backup operator's).
 */
export function restoreSourceClient(url: string, did: string, token?: string): SourceClient {
  const base = url.replace(/\/+$/, '')
  return {
    url: base,
    fetch: (path, init = {}) => {
      const headers = new Headers(init.headers)
      if (token) headers.set('authorization', `Bearer ${token}`)
      const byAccount = BY_ACCOUNT.includes(path.split('?')[0] as string) && !/[?&]did=/.test(path)
      const target = byAccount
        ? `${path}${path.includes('?') ? '&' : '?'}did=${encodeURIComponent(did)}`
        : path
      return fetch(`${base}${target}`, { ...init, headers })
    },
  }
}
