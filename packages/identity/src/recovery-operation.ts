import type { Keypair } from '@atproto/crypto'
import { type Operation, signOperation, type UnsignedOperation } from '@did-plc/lib'
import type { RecoveryPlan } from './recovery-plan.ts'

/** Where the identity goes: the new PDS and the keys it gave the account. */
export interface RecoveryTarget {
  /** The new PDS's URL (`atproto_pds` endpoint). */
  pds: string
  /** did:key of the new PDS's signing key for this account (`#atproto`). */
  signingKey: string
  /** The new PDS's own rotation key, ranked after the user's (optional). */
  pdsRotationKey?: string
}

/**
 * The operation that takes the identity back, unsigned: after `plan.prev`, pointing at the new
 * PDS and its signing key, with the user's key (`userKey`, a did:key) first in the rotation
 * keys and every other key of the old state dropped (whoever made the change being undone must
 * not be able to make it again). Handle and other services are kept. A server prepares this for
 * a page that signs it where the key is; `recoveryOperation` signs it here.
 */
export function unsignedRecoveryOperation(
  plan: RecoveryPlan,
  userKey: string,
  target: RecoveryTarget,
): UnsignedOperation {
  return {
    type: 'plc_operation',
    prev: plan.prev,
    rotationKeys: [userKey, ...(target.pdsRotationKey ? [target.pdsRotationKey] : [])],
    verificationMethods: { ...plan.base.verificationMethods, atproto: target.signingKey },
    alsoKnownAs: plan.base.alsoKnownAs,
    services: {
      ...plan.base.services,
      atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: target.pds.replace(/\/+$/, '') },
    },
  }
}

/** `unsignedRecoveryOperation`, signed with the user's key in this process. */
export async function recoveryOperation(
  plan: RecoveryPlan,
  userKey: Keypair,
  target: RecoveryTarget,
): Promise<Operation> {
  return signOperation(unsignedRecoveryOperation(plan, userKey.did(), target), userKey)
}
