/**
 * The scope a destination asks a plain PDS's authorization server for (spec/dialect-plain-pds.md,
 * "Scopes"): `PLAIN_PDS_OAUTH_SCOPE`, plus `SPACE_MIGRATION_SCOPE` (proposal 0016's `read_self` in
 * every space) when the server's metadata lists it in `scopes_supported`, or when the operator
 * asks for it regardless. A server that does not know a `space:` scope may refuse the whole
 * request, and then nothing would move: so not asked for blindly.
 */
import { PLAIN_PDS_OAUTH_SCOPE, SPACE_MIGRATION_SCOPE } from '@pds-transfer/core'

/** How long each metadata document may take. */
const METADATA_TIMEOUT_MS = 10_000

/** `metadata`: ask when the server lists the scope (default); `always`; `never`. */
export type SpaceScopePolicy = 'metadata' | 'always' | 'never'

/** `PLAIN_PDS_OAUTH_SCOPE`, with `SPACE_MIGRATION_SCOPE` when `policy` and the metadata say so. */
export async function plainPdsScope(pdsUrl: string, policy: SpaceScopePolicy = 'metadata'): Promise<string> {
  const spaces = policy === 'always' || (policy === 'metadata' && (await listsSpaceScope(pdsUrl)))
  return spaces ? `${PLAIN_PDS_OAUTH_SCOPE} ${SPACE_MIGRATION_SCOPE}` : PLAIN_PDS_OAUTH_SCOPE
}

/**
 * Whether the PDS's authorization server (its protected-resource document names it) lists
 * `SPACE_MIGRATION_SCOPE` in `scopes_supported`. No answer counts as no: the move goes on
 * without the scope, and the probe then reports the spaces as not granted.
 */
export async function listsSpaceScope(pdsUrl: string): Promise<boolean> {
  const resource = await metadata(new URL('/.well-known/oauth-protected-resource', pdsUrl))
  const issuer = (resource?.authorization_servers as unknown[] | undefined)?.[0]
  if (typeof issuer !== 'string') return false
  const server = await metadata(new URL('/.well-known/oauth-authorization-server', issuer))
  const supported = server?.scopes_supported
  return Array.isArray(supported) && supported.includes(SPACE_MIGRATION_SCOPE)
}

async function metadata(url: URL): Promise<Record<string, unknown> | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(METADATA_TIMEOUT_MS) })
    if (!res.ok) {
      await res.body?.cancel()
      return undefined
    }
    return (await res.json()) as Record<string, unknown>
  } catch {
    return undefined
  }
}
