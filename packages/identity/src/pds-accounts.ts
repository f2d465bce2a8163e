/**
 * Every did:plc account a PDS hosts, from its public `com.atproto.sync.listRepos`, page by page:
 * what the watcher watches when told to watch a whole PDS. did:web accounts are returned apart:
 * they have no PLC log to watch.
 */
export async function listPdsAccounts(
  pds: string,
  options: { fetch?: typeof fetch; pageSize?: number } = {},
): Promise<{ plc: string[]; other: string[] }> {
  const doFetch = options.fetch ?? fetch
  const found = { plc: [] as string[], other: [] as string[] }
  let cursor: string | undefined
  do {
    const url = new URL('/xrpc/com.atproto.sync.listRepos', pds)
    url.searchParams.set('limit', String(options.pageSize ?? 1000))
    if (cursor) url.searchParams.set('cursor', cursor)
    const res = await doFetch(url, { signal: AbortSignal.timeout(30_000) })
    if (!res.ok) throw new Error(`${pds} refused listRepos (${res.status}); is it a PDS?`)
    const page = (await res.json()) as { cursor?: string; repos?: { did?: unknown }[] }
    const repos = page.repos ?? []
    for (const { did } of repos)
      if (typeof did === 'string') (did.startsWith('did:plc:') ? found.plc : found.other).push(did)
    // A page without repos ends the walk even if a cursor came with it (no endless loop).
    cursor = repos.length > 0 ? page.cursor : undefined
  } while (cursor)
  return found
}
