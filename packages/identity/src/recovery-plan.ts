/**
 * How the user's own rotation key can take an identity back, decided from the PLC audit log
 * before anything is signed, with PLC's own rules (did:plc spec, "Key Rotation & Account
 * Recovery"; `assureValidNextOp` in @did-plc/lib): a new operation must be signed by a rotation
 * key of the operation it follows; to undo operations (fork from an earlier one and nullify the
 * rest), the key must rank above the one that signed the first operation undone (a lower index
 * in that earlier operation's rotation keys), and that operation must be at most 72 hours old.
 * PLC remains the judge; this says in advance, with reasons, what it will accept.
 */
import { assureValidSig, type ExportedOp, normalizeOp, type Operation } from '@did-plc/lib'
import { IdentityError } from './identity-error.ts'

/** One entry of PLC's audit log (`/<did>/log/audit`, `Client.getAuditableLog`). */
export type PlcAuditEntry = ExportedOp

export const RECOVERY_WINDOW_MS = 72 * 3_600_000

export type RecoveryPlan =
  /** The user's key can still change the identity: a new operation after the last one. */
  | { kind: 'update'; prev: string; base: Operation }
  /**
   * Operations since `base` were made without the user (their key removed, or outranked): a
   * new operation after `base` nullifies them. `deadline` is when PLC stops allowing it.
   */
  | { kind: 'fork'; prev: string; base: Operation; nullifies: ExportedOp[]; signedBy: string; deadline: Date }

/** The plan for `userKey` (a did:key) over `log` (`getAuditableLog`); throws `IdentityError` when there is none. */
export async function planRecovery(
  log: ExportedOp[],
  userKey: string,
  now: Date = new Date(),
): Promise<RecoveryPlan> {
  const active = log.filter((op) => !op.nullified)
  const last = active.at(-1)
  if (!last) throw new IdentityError('NoUserKey', 'PLC has no operations for this identity', 'check the DID')
  if (last.operation.type === 'plc_tombstone')
    throw new IdentityError(
      'Tombstoned',
      'this identity was deleted at PLC (tombstoned)',
      'a deleted did:plc cannot be recovered; only an operation before the deletion, within 72 hours, could have been',
    )
  // The newest operation whose rotation keys include the user's: from there the user can act.
  let b = active.length - 1
  for (; b >= 0; b--) {
    const op = active[b] as ExportedOp
    if (op.operation.type !== 'plc_tombstone' && normalizeOp(op.operation).rotationKeys.includes(userKey))
      break
  }
  if (b < 0)
    throw new IdentityError(
      'NoUserKey',
      `${userKey} has never been one of this identity's rotation keys, so it cannot change it`,
      'only the keys PLC lists can; if your old server is gone, no one else can move this identity. Next time, add a key of your own (pds-identity keygen, then at your server: the rotation key step of /migrate)',
    )
  const base = active[b] as ExportedOp
  // The loop stopped only at an operation that has rotation keys, never a tombstone.
  const baseOp = normalizeOp(base.operation as Exclude<ExportedOp['operation'], { type: 'plc_tombstone' }>)
  if (b === active.length - 1) return { kind: 'update', prev: base.cid, base: baseOp }

  const first = active[b + 1] as ExportedOp
  const signedBy = await assureValidSig(baseOp.rotationKeys, first.operation)
  const userRank = baseOp.rotationKeys.indexOf(userKey)
  const signerRank = baseOp.rotationKeys.indexOf(signedBy)
  if (userRank >= signerRank)
    throw new IdentityError(
      'KeyTooWeak',
      `the change of ${first.createdAt} was signed by ${signedBy}, ranked ${signerRank + 1} of the rotation keys; yours is ranked ${userRank + 1}, so PLC does not let it undo that change`,
      'only a key ranked above the one that signed it can; keep your own key first in the list (the /migrate rotation key step does)',
    )
  const deadline = new Date(new Date(first.createdAt).getTime() + RECOVERY_WINDOW_MS)
  if (now > deadline)
    throw new IdentityError(
      'WindowClosed',
      `the change of ${first.createdAt} is more than 72 hours old (the window closed ${deadline.toISOString()}); PLC no longer lets any key undo it`,
      'the identity stays as that change left it; ask whoever holds its current rotation keys, or start a new identity and tell your followers',
    )
  return { kind: 'fork', prev: base.cid, base: baseOp, nullifies: active.slice(b + 1), signedBy, deadline }
}
