import { WireError } from '@pds-transfer/core'
import { ImportFailure } from './import-failure.ts'
import type { FailureReason } from './inbound-transfer.ts'
import { SourceError } from './source-client.ts'

/** Failures of the connection rather than of the data: worth another attempt. */
export const RETRYABLE: ReadonlySet<FailureReason> = new Set(['StreamCut', 'SourceUnreachable', 'NoProgress'])

/**
 * Failures after which the user may resume the same transfer, keeping what was verified: the
 * connection or this server's disk gave out (a source's deploy, a full disk since freed, a
 * destination restarted without a session), not the data.
 */
export const RESUMABLE: ReadonlySet<FailureReason> = new Set([...RETRYABLE, 'Interrupted', 'LocalStorage'])

/** Error codes of this machine's storage (node:fs and SQLite): a full or broken disk here, not the source. */
const LOCAL_STORAGE_CODES =
  /^(ENOSPC|EDQUOT|EROFS|EIO|SQLITE_FULL|SQLITE_IOERR|SQLITE_READONLY|SQLITE_CANTOPEN)/

/** Whether `err` (or an error it wraps) is a local storage error. */
export function isLocalStorageError(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && LOCAL_STORAGE_CODES.test(code)) return true
  }
  return false
}

/** Maps whatever ended a step to a named failure; anything unknown is the connection's. */
export function toFailure(err: unknown): { reason: FailureReason; message: string } {
  if (err instanceof ImportFailure) return { reason: err.reason, message: err.message }
  if (err instanceof SourceError) return { reason: 'SourceRefused', message: err.message }
  if (err instanceof WireError) {
    const cut = err.reason === 'TruncatedFrame' || err.reason === 'TruncatedHeader'
    return { reason: cut ? 'StreamCut' : 'StreamInvalid', message: err.message }
  }
  const message = err instanceof Error ? err.message : String(err)
  if (isLocalStorageError(err)) {
    // Shown to the user as is (the migrate page, getTransferStatus): say what it means for them,
    // that nothing moved and who must act, not only the errno.
    return {
      reason: 'LocalStorage',
      message: `this server could not store your data: its disk is full or failing (${message}). Your account has not moved; try again once the server's operator has freed space`,
    }
  }
  if (isTransportError(err)) return { reason: 'SourceUnreachable', message }
  if (isSignInError(err)) {
    return {
      reason: 'SourceRefused',
      message: `your sign-in at your current server is no longer valid (${message}); sign in again`,
    }
  }
  // Neither the source's nor the disk's: a fault of this server, said as such (not retried as
  // the source's, which would blame it and hide the bug).
  return {
    reason: 'Internal',
    message: `this server hit an error it did not expect (${message}); its operator can find the details in its log`,
  }
}

/** Error codes of a connection that failed (node:net, DNS, undici). */
const TRANSPORT_CODES = /^(ECONN|EPIPE|ETIMEDOUT|EAI_|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|ENETDOWN|UND_ERR_)/

/** A connection that failed or was cut: fetch's TypeError, a socket code, or a timeout. */
function isTransportError(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof TypeError) return true
    if (e.name === 'AbortError' || e.name === 'TimeoutError') return true
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && TRANSPORT_CODES.test(code)) return true
  }
  return false
}

/** The OAuth session with the source expired, was revoked or could not be refreshed. */
function isSignInError(err: unknown): boolean {
  return err instanceof Error && /^(Token\w*Error|OAuth\w*Error)$/.test(err.name)
}
