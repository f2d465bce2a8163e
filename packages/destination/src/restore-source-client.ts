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

/** The copy's address, normalized (no trailing slash, no query), or undefined when it is not http(s). */
export function copyUrl(typed: string): string | undefined {
  try {
    const url = new URL(/^https?:\/\//i.test(typed) ? typed : `https://${typed}`)
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return undefined
    return `${url.origin}${url.pathname.replace(/\/+$/, '')}`
  } catch {
    return undefined
  }
}

/** Whether the copy holds the account: its latest commit, or what it said. */
export async function probeCopy(
  source: string,
  did: string,
  token: string,
): Promise<{ rev?: string } | { message: string }> {
  const client = restoreSourceClient(source, did, token || undefined)
  let res: Response
  try {
    res = await client.fetch(`/xrpc/com.atproto.sync.getLatestCommit?did=${encodeURIComponent(did)}`, {
      signal: AbortSignal.timeout(10_000),
    })
  } catch (err) {
    return { message: `Could not reach ${source} (${(err as Error).message}). Check the address.` }
  }
  const body = (await res.json().catch(() => ({}))) as { rev?: unknown; error?: unknown; message?: unknown }
  if (res.ok) return typeof body.rev === 'string' ? { rev: body.rev } : {}
  if (res.status === 401 || res.status === 403)
    return {
      message: `${source} refused the access token (${res.status}). Check the token, or ask whoever runs the copy.`,
    }
  if (res.status === 404 || body.error === 'RepoNotFound')
    return { message: `${source} holds no copy of ${did}. Check the address, or use another copy.` }
  return {
    message: `${source} answered ${res.status}${typeof body.error === 'string' ? ` (${body.error})` : ''}. Try again later, or use another copy.`,
  }
}
