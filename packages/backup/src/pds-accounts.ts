/** The active accounts a PDS hosts, from its public `com.atproto.sync.listRepos`, every page. */
export async function listPdsAccounts(pds: string, fetchImpl: typeof fetch = fetch): Promise<string[]> {
  const base = pds.replace(/\/+$/, '')
  const dids: string[] = []
  let cursor: string | undefined
  do {
    const query = new URLSearchParams({ limit: '1000', ...(cursor && { cursor }) })
    const res = await fetchImpl(`${base}/xrpc/com.atproto.sync.listRepos?${query}`, {
      signal: AbortSignal.timeout(30_000),
    })
    if (!res.ok) throw new Error(`listRepos at ${base} answered HTTP ${res.status}`)
    const page = (await res.json()) as { repos?: { did?: unknown; active?: unknown }[]; cursor?: unknown }
    for (const repo of page.repos ?? [])
      if (typeof repo.did === 'string' && repo.active !== false) dids.push(repo.did)
    cursor = typeof page.cursor === 'string' && (page.repos?.length ?? 0) > 0 ? page.cursor : undefined
  } while (cursor)
  return dids
}
