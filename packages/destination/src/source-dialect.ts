import { NSID, WELL_KNOWN_PATH } from '@pds-transfer/core'
import { createTransferId } from './transfer-id.ts'

/**
 * What kind of source a PDS is: `v1` serves our transfer endpoints (its
 * `/.well-known/atproto-transfer` answers), `draft` serves the current draft's JSON
 * `exportAccount` (spec/dialect-draft.md), `plain` is any other PDS, read over the sync
 * endpoints every PDS serves (spec/dialect-plain-pds.md).
 */
export type SourceDialect = 'v1' | 'draft' | 'plain'

/** How long each probe may take. */
const PROBE_TIMEOUT_MS = 10_000

/**
 * Tells by the well-known document first: only a 404 makes a source other than v1. Any other
 * answer, or none, is taken as v1, whose pull then fails by name (unreachable, refused) rather
 * than quietly falling back to a dialect with weaker guarantees. After a 404, `draftProbe` tells
 * a draft source from a plain one.
 */
export async function sourceDialect(url: string, did: string): Promise<SourceDialect> {
  try {
    const res = await fetch(`${url.replace(/\/+$/, '')}${WELL_KNOWN_PATH}`, {
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
    })
    await res.body?.cancel()
    if (res.status !== 404) return 'v1'
  } catch {
    return 'v1'
  }
  return (await draftProbe(url, did)) ? 'draft' : 'plain'
}

/** The draft's error names (§4) a source may give a request without a token. */
const DRAFT_REFUSALS = new Set(['TransferNotAuthorized', 'AccountNotFound', 'AccountDeactivated'])

/**
 * Whether the source serves the draft's `exportAccount`: a valid draft body sent without a
 * token must be refused by the draft's own name (§4, `TransferNotAuthorized` for a missing
 * token). Nothing starts (no token); a plain PDS never answers that name (the reference PDS
 * answers `InvalidRequest` "No service configured", `AuthMissing`, or its AppView's
 * `MethodNotImplemented`). No answer at all counts as draft, whose pull then fails by name.
 */
export async function draftProbe(url: string, did: string): Promise<boolean> {
  let res: Response
  try {
    res = await fetch(`${url.replace(/\/+$/, '')}/xrpc/${NSID.exportAccount}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ did, transferId: createTransferId() }),
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
    })
  } catch {
    return true
  }
  const body = (await res.json().catch(() => undefined)) as { error?: unknown } | undefined
  return res.status >= 400 && typeof body?.error === 'string' && DRAFT_REFUSALS.has(body.error)
}
