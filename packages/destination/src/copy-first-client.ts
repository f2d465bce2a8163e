/**
 * A move whose data is read from a copy of the account (a backup, an export) while its PDS still
 * cooperates: faster, and possible when the PDS is slow, far away or rate-limits `getBlob`. The
 * PDS stays the source of truth: the copy's repo must verify against the DID's current key like
 * the PDS's would, a blob the copy lacks is fetched from the PDS, and the writes made since the
 * copy was taken come from the PDS as a diff at completion (the plain dialect's catch-up,
 * `getRepo?since=<the copy's rev>`). Everything that is not the account's public data
 * (preferences, email, the PLC code, the identity operation, the deactivation) goes to the PDS.
 */
import type { SourceClient } from './source-client.ts'

/** Read from the copy first: the repo, its head, the list of blobs. */
const FROM_COPY = new Set([
  '/xrpc/com.atproto.sync.getRepo',
  '/xrpc/com.atproto.sync.getLatestCommit',
  '/xrpc/com.atproto.sync.listBlobs',
])
const GET_BLOB = '/xrpc/com.atproto.sync.getBlob'

/**
 * The client a pull reads with: sync reads from `copy` (a blob it does not hold, from `source`),
 * everything else from `source`, whose URL it keeps (the transfer's source is the PDS).
 */
export function copyFirstClient(copy: SourceClient, source: SourceClient): SourceClient {
  return {
    url: source.url,
    fetch: async (path, init) => {
      const route = path.split('?')[0] as string
      if (FROM_COPY.has(route)) return copy.fetch(path, init)
      if (route !== GET_BLOB) return source.fetch(path, init)
      const fromCopy = await copy.fetch(path, init)
      if (!(await lacksBlob(fromCopy))) return fromCopy
      return source.fetch(path, init)
    },
  }
}

/** Whether the copy answered that it has no such blob (404, or the reference PDS's 400 names). */
async function lacksBlob(res: Response): Promise<boolean> {
  if (res.ok) return false
  if (res.status === 404) {
    await res.body?.cancel()
    return true
  }
  const body = (await res
    .clone()
    .json()
    .catch(() => ({}))) as { error?: unknown; message?: unknown }
  return body.error === 'BlobNotFound' || /blob not found/i.test(String(body.message ?? ''))
}
