/**
 * The account's email from a plain source's `com.atproto.server.getSession`: the one part of
 * the private account state a plain PDS shares, and only with the `account:email` scope (the
 * reference PDS leaves the fields out otherwise). Without it the user has no email here, so no
 * password reset and, on the reference PDS, no row to hold the password they chose.
 */
import type { AccountState } from '@pds-transfer/core'
import type { SourceClient } from './source-client.ts'
import { fetchStreaming, readJson } from './sync-retry.ts'

/** Largest getSession answer read (a few hundred bytes). */
const MAX_SESSION_BYTES = 64 * 1024

/** `{ email, emailConfirmed }` as the source states them, or `{}` if it does not share them. */
export async function readAccountEmail(client: SourceClient, stallTimeoutMs: number): Promise<AccountState> {
  const session = (await fetchStreaming(
    (signal) => client.fetch('/xrpc/com.atproto.server.getSession', { signal }),
    'getSession',
    stallTimeoutMs,
    (_res, body) =>
      readJson(body, { maxBytes: MAX_SESSION_BYTES, what: 'getSession', reason: 'SourceRefused' }),
  )) as { email?: unknown; emailConfirmed?: unknown } | null
  if (typeof session?.email !== 'string') return {}
  return {
    email: session.email,
    ...(typeof session.emailConfirmed === 'boolean' && { emailConfirmed: session.emailConfirmed }),
  }
}
