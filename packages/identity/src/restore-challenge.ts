/**
 * The text a user's rotation key signs to prove, before a restore starts, that its holder asks
 * for it (a destination checks it: `@pds-transfer/destination`'s restore-proof). It names the
 * server, the account, the copy to read and an expiry, and begins with a fixed line, so a
 * signature over it can never pass for a PLC operation (a DAG-CBOR map); the CLI signs nothing
 * else with this command.
 */
import type { Keypair } from '@atproto/crypto'
import { IdentityError } from './identity-error.ts'

const FIRST_LINE = 'atproto account restore: proof of rotation key'
/** How long a challenge may be signed and used: long enough to find a key file. */
export const CHALLENGE_LIFETIME_MS = 15 * 60_000

/** What a challenge binds the signature to. */
export interface RestoreChallengeScope {
  /** The restoring server's service DID. */
  serviceDid: string
  did: string
  /** The URL of the copy the restore reads. */
  source: string
}

/** The challenge for `scope`, valid for `CHALLENGE_LIFETIME_MS` from `now`. */
export function restoreChallenge(scope: RestoreChallengeScope, now: Date = new Date()): string {
  const expires = new Date(now.getTime() + CHALLENGE_LIFETIME_MS).toISOString()
  return [
    FIRST_LINE,
    `server: ${scope.serviceDid}`,
    `account: ${scope.did}`,
    `copy: ${scope.source}`,
    `expires: ${expires}`,
  ].join('\n')
}

/** The scope and expiry of a challenge, or undefined when the text is not one. */
export function readRestoreChallenge(text: string): (RestoreChallengeScope & { expires: Date }) | undefined {
  const lines = text.split('\n')
  if (lines.length !== 5 || lines[0] !== FIRST_LINE) return undefined
  const field = (name: string, line: string | undefined) =>
    line?.startsWith(`${name}: `) ? line.slice(name.length + 2) : undefined
  const serviceDid = field('server', lines[1])
  const did = field('account', lines[2])
  const source = field('copy', lines[3])
  const expires = new Date(field('expires', lines[4]) ?? '')
  if (!serviceDid || !did || !source || Number.isNaN(expires.getTime())) return undefined
  return { serviceDid, did, source, expires }
}

/** The key's signature over a challenge (base64url, low-S); refuses any other text. */
export async function signRestoreChallenge(keypair: Keypair, text: string): Promise<string> {
  if (!readRestoreChallenge(text))
    throw new IdentityError(
      'InvalidChallenge',
      'that is not a restore challenge, and your key signs nothing else with this command',
      'copy the challenge again from the /recover page',
    )
  return Buffer.from(await keypair.sign(new TextEncoder().encode(text))).toString('base64url')
}
