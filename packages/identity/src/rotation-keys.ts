import { assureValidSig, type ExportedOp, normalizeOp } from '@did-plc/lib'
import { RECOVERY_WINDOW_MS } from './recovery-plan.ts'

/** One of the identity's current rotation keys, as a person needs to see it. */
export interface RotationKeyView {
  /** 1 is the strongest: it can undo what the keys below it did, for 72 hours. */
  rank: number
  key: string
  /** One of the keys the person says are theirs. */
  yours: boolean
}

/** A recent change to the identity, and how long it can still be undone. */
export interface RecentChange {
  cid: string
  createdAt: string
  signedBy: string
  /** Until when a key ranked above `signedBy` can undo it. */
  undoableUntil: string
}

/** The identity's rotation keys now, and its changes of the last 72 hours, from the audit log. */
export async function describeRotationKeys(
  log: ExportedOp[],
  yourKeys: string[],
  now: Date = new Date(),
): Promise<{ keys: RotationKeyView[]; recent: RecentChange[] }> {
  const active = log.filter((op) => !op.nullified)
  const last = active.at(-1)
  const current =
    last && last.operation.type !== 'plc_tombstone' ? normalizeOp(last.operation).rotationKeys : []
  const recent: RecentChange[] = []
  for (let i = 1; i < active.length; i++) {
    const op = active[i] as ExportedOp
    const until = new Date(op.createdAt).getTime() + RECOVERY_WINDOW_MS
    if (until < now.getTime()) continue
    const before = (active[i - 1] as ExportedOp).operation
    if (before.type === 'plc_tombstone') continue
    const signedBy = await assureValidSig(normalizeOp(before).rotationKeys, op.operation).catch(
      () => 'unknown',
    )
    recent.push({
      cid: op.cid,
      createdAt: op.createdAt,
      signedBy,
      undoableUntil: new Date(until).toISOString(),
    })
  }
  return { keys: current.map((key, i) => ({ rank: i + 1, key, yours: yourKeys.includes(key) })), recent }
}
