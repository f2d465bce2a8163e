import { IdentityError } from './identity-error.ts'

/**
 * A procedure call at the account's PDS, as the account: the body is sent as JSON (or nothing),
 * the answer's JSON returned. How the caller is signed in (a password session, an OAuth session)
 * is its own business; the checks that use it (add-rotation-key.ts) are the same either way.
 */
export type PdsCall = (nsid: string, body: unknown) => Promise<unknown>

/** What a caller sends requests with: a path below the PDS (`/xrpc/…`) and the request. */
export type PdsFetch = (path: string, init: RequestInit) => Promise<Response>

/** XRPC errors the reference PDS answers for a wrong or expired emailed code (its email-token helper). */
const CODE_REFUSALS = new Set(['InvalidToken', 'ExpiredToken'])

/**
 * A `PdsCall` over `fetch`. A refusal becomes an `IdentityError` with the PDS's own words:
 * `InvalidCode` for a wrong or expired emailed code (the person asks for a new one),
 * `PdsRefused` for anything else, with `next` saying what to try.
 */
export function pdsCall(fetch: PdsFetch, next: string): PdsCall {
  return async (nsid, body) => {
    const res = await fetch(`/xrpc/${nsid}`, {
      method: 'POST',
      ...(body !== undefined && {
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      }),
    }).catch((err: unknown) => {
      throw new IdentityError(
        'PdsRefused',
        `your PDS did not answer ${nsid} (${(err as Error).message})`,
        next,
      )
    })
    const answer = (await res.json().catch(() => ({}))) as { error?: string; message?: string }
    if (res.ok) return answer
    const words = `${nsid}: ${answer.error ?? res.status}${answer.message ? `: ${answer.message}` : ''}`
    if (answer.error && CODE_REFUSALS.has(answer.error))
      throw new IdentityError(
        'InvalidCode',
        `your PDS did not accept the code (${answer.error === 'ExpiredToken' ? 'expired' : 'wrong or already used'})`,
        'ask your PDS for a new code and type the one in the newest email',
      )
    throw new IdentityError('PdsRefused', `your PDS refused: ${words}`, next)
  }
}
