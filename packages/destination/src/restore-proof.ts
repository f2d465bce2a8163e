/**
 * Proof that whoever starts a restore holds the rotation key it names. Without it anyone could
 * start restores of any DID (its keys are public in PLC's log), tying up the account's one
 * in-flight slot here and making this server pull from any URL. The user's key signs the
 * challenge of `@pds-transfer/identity` (this server, the account, the copy, an expiry), in the
 * /recover page or with `pds-identity prove`. Stateless: nothing is stored before it checks.
 */
import { verifySignature } from '@atproto/crypto'
import {
  CHALLENGE_LIFETIME_MS,
  type RestoreChallengeScope,
  readRestoreChallenge,
} from '@pds-transfer/identity'
import { EngineError } from './engine-error.ts'

/**
 * Checks that `signature` (base64url, as PLC's) is `userKey`'s over `challenge`, and that the
 * challenge is for this scope and not expired. Throws `EngineError` saying which.
 */
export async function checkRestoreProof(
  scope: RestoreChallengeScope,
  proof: { challenge: string; signature: string; userKey: string },
  now: Date = new Date(),
): Promise<void> {
  const read = readRestoreChallenge(proof.challenge)
  if (!read || read.serviceDid !== scope.serviceDid || read.did !== scope.did || read.source !== scope.source)
    throw new EngineError('InvalidState', 'the signed text is not this restore’s; start again from /recover')
  const left = read.expires.getTime() - now.getTime()
  if (left <= 0 || left > CHALLENGE_LIFETIME_MS)
    throw new EngineError('InvalidState', 'the signed text has expired; sign it again')
  const valid = await verifySignature(
    proof.userKey,
    new TextEncoder().encode(proof.challenge),
    Buffer.from(proof.signature, 'base64url'),
  ).catch(() => false)
  if (!valid)
    throw new EngineError(
      'InvalidRotationKey',
      `the signature is not made by ${proof.userKey}; choose the key file of that key`,
    )
}
