/**
 * Whether an account may be restored here from a copy of its data (a backup, an export, any
 * getRepo/getBlob endpoint) rather than moved from its PDS: the old PDS may be gone or hostile,
 * so the identity is taken back with the user's own rotation key (spec/recovery.md). Decided from
 * the PLC audit log before anything is pulled, so a user whose key cannot do it is told at once,
 * not after gigabytes. The copy's commit is then verified against the signing key of the PLC
 * state the recovery builds on, which is the old PDS's key for the account: a hostile change
 * since may have replaced it, and data signed by that replacement is not the user's.
 */
import type * as plc from '@did-plc/lib'
import { IdentityError, planRecovery, type RecoveryPlan } from '@pds-transfer/identity'
import type { AccountSink } from './account-sink.ts'
import { EngineError } from './engine-error.ts'
import type { InboundTransfer } from './inbound-transfer.ts'

/** What a restore needs of the identity, as decided when it was admitted. */
export interface RestoreIdentity {
  /** The user's rotation key (did:key) that will sign the operation taking the identity here. */
  userKey: string
  /** The key the copy's commits must be signed with (`#atproto` of the recovery's base state). */
  repoSigningKey: string
  handle?: string
  /** `update`: the user's key can act after the last operation; `fork`: it undoes later ones. */
  plan: RecoveryPlan['kind']
  /** For a fork: the last moment PLC allows it (ms since epoch). */
  deadline?: number
}

/** Refused because the user's key cannot take the identity back; `next` says what is still possible. */
export class RestoreRefusal extends EngineError {
  constructor(
    readonly reason: IdentityError['reason'],
    message: string,
    readonly next: string,
  ) {
    super('RecoveryImpossible', `${message}. What you can do: ${next}`)
  }
}

/**
 * Plans the recovery of `did` with `userKey` over PLC's audit log and checks the account does
 * not already live here. Throws `RestoreRefusal` (no key of the user's, a change it cannot
 * undo, the 72 hours over) or `EngineError`.
 */
export async function admitRestore(
  deps: { plc: plc.Client; sink: AccountSink },
  did: string,
  userKey: string,
  now: Date = new Date(),
): Promise<RestoreIdentity> {
  if (!did.startsWith('did:plc:'))
    throw new EngineError(
      'InvalidState',
      `${did} is not a did:plc; only a did:plc is recovered with a rotation key`,
    )
  if (!/^did:key:z[1-9A-HJ-NP-Za-km-z]+$/.test(userKey))
    throw new EngineError(
      'InvalidRotationKey',
      `${userKey} is not a public did:key (the key file's "publicKey")`,
    )
  const log = await deps.plc.getAuditableLog(did).catch((err: unknown) => {
    throw new EngineError(
      'PlcUnreachable',
      `the PLC directory did not give the history of ${did} (${(err as Error).message}); check the DID and try again`,
    )
  })
  let plan: RecoveryPlan
  try {
    plan = await planRecovery(log, userKey, now)
  } catch (err) {
    if (err instanceof IdentityError) throw new RestoreRefusal(err.reason, err.message, err.next)
    throw err
  }
  if (await deps.sink.isActive(did)) throw new EngineError('AccountAlreadyActive', `${did} is active here`)
  const repoSigningKey = plan.base.verificationMethods.atproto
  if (!repoSigningKey)
    throw new RestoreRefusal(
      'NoUserKey',
      `the identity state your key can return to has no repository signing key, so no copy can be verified against it`,
      'ask the PLC directory operator; nothing was changed',
    )
  const handle = plan.base.alsoKnownAs.find((a) => a.startsWith('at://'))?.slice('at://'.length)
  return {
    userKey,
    repoSigningKey,
    ...(handle && { handle }),
    plan: plan.kind,
    ...(plan.kind === 'fork' && { deadline: plan.deadline.getTime() }),
  }
}

/** Whether a transfer is a restore (its data from a copy, its identity taken back by the user's key). */
export function isRestore(t: InboundTransfer): t is InboundTransfer & { restore: RestoreIdentity } {
  return t.dialect === 'restore' && t.restore !== undefined
}
