import { type ExportedOp, normalizeOp } from '@did-plc/lib'
import { replayAuditLog } from './operation-history.ts'
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
  const last = log.filter((op) => !op.nullified).at(-1)
  const current =
    last && last.operation.type !== 'plc_tombstone' ? normalizeOp(last.operation).rotationKeys : []
  const recent: RecentChange[] = []
  for (const step of await replayAuditLog(log)) {
    const until = new Date(step.entry.createdAt).getTime() + RECOVERY_WINDOW_MS
    // Only changes still in force can be undone; the creation of the DID is no change.
    if (step.entry.nullified || !step.before || until < now.getTime()) continue
    recent.push({
      cid: step.entry.cid,
      createdAt: step.entry.createdAt,
      signedBy: step.signedBy ?? 'unknown',
      undoableUntil: new Date(until).toISOString(),
    })
  }
  return { keys: current.map((key, i) => ({ rank: i + 1, key, yours: yourKeys.includes(key) })), recent }
}
