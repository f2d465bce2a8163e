/** Every record of one collection, through the PDS's public `listRecords` (all pages). */
export async function listAllRecords(pdsUrl: string, did: string, collection: string): Promise<unknown[]> {
  const records: unknown[] = []
  let cursor: string | undefined
  do {
    const query = new URLSearchParams({ repo: did, collection, limit: '100', ...(cursor && { cursor }) })
    const res = await fetch(`${pdsUrl}/xrpc/com.atproto.repo.listRecords?${query}`)
    if (!res.ok)
      throw new Error(`listRecords ${collection} at ${pdsUrl}: HTTP ${res.status}: ${await res.text()}`)
    const page = (await res.json()) as { records: unknown[]; cursor?: string }
    records.push(...page.records)
    cursor = page.records.length > 0 ? page.cursor : undefined
  } while (cursor)
  return records
}
