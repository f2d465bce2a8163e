import { WELL_KNOWN_PATH } from '@pds-transfer/core'

/**
 * What kind of source a PDS is: `v1` serves our transfer endpoints (its
 * `/.well-known/atproto-transfer` answers), `plain` is any other PDS, read over the sync
 * endpoints every PDS serves (spec/dialect-plain-pds.md).
 */
export type SourceDialect = 'v1' | 'plain'

/**
 * Tells by the well-known document: only a 404 makes a source plain. Any other answer, or none,
 * is taken as v1, whose pull then fails by name (unreachable, refused) rather than quietly
 * falling back to a dialect with weaker guarantees.
 */
export async function sourceDialect(url: string): Promise<SourceDialect> {
  try {
    const res = await fetch(`${url.replace(/\/+$/, '')}${WELL_KNOWN_PATH}`, {
      signal: AbortSignal.timeout(10_000),
    })
    await res.body?.cancel()
    return res.status === 404 ? 'plain' : 'v1'
  } catch {
    return 'v1'
  }
}
