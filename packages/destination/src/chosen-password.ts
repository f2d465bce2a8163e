/**
 * The password a user chooses for this server in /migrate or /recover (D24: no credential
 * moves): checked before anything is taken, then held in this process's memory until activation
 * sets it. Invariant: a password is never stored, and one `checkNewPassword` refuses never
 * reaches the sink; a restart drops what is held (the user then sets one by email).
 */
import type { AccountSink } from './account-sink.ts'
import { EngineError } from './engine-error.ts'

/** The reference PDS's bounds for a new password (its NEW_PASSWORD_MAX_LENGTH is 256). */
const MIN_PASSWORD = 8
const MAX_PASSWORD = 256

/** Throws `EngineError('InvalidPassword')` for a password `sink` cannot set. */
export function checkNewPassword(sink: AccountSink, password: string): void {
  if (!sink.setPassword) {
    throw new EngineError('InvalidPassword', 'this server sets passwords by email only')
  }
  if (password.length < MIN_PASSWORD || password.length > MAX_PASSWORD) {
    throw new EngineError(
      'InvalidPassword',
      `a password must have ${MIN_PASSWORD} to ${MAX_PASSWORD} characters`,
    )
  }
}

/** Chosen passwords by transfer, until activation takes them. */
export class HeldPasswords {
  private readonly held = new Map<string, string>()

  /** Holds `password` for `transferId` (none or empty: forgets any held). */
  hold(transferId: string, password: string | undefined): void {
    if (password) this.held.set(transferId, password)
    else this.held.delete(transferId)
  }

  /** The password held for `transferId`, once. */
  take(transferId: string): string | undefined {
    const password = this.held.get(transferId)
    this.held.delete(transferId)
    return password
  }
}
