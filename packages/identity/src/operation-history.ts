/**
 * An identity's PLC audit log replayed in order, the way the directory applied it: which state
 * each operation followed (its `prev`), which key of that state signed it, and which operations
 * it nullified when it arrived (a fork). The audit log lists nullified operations too, in the
 * order they arrived, so replaying it is the only way to know who undid what: `nullified: true`
 * alone says neither when nor by which operation.
 */
import { assureValidSig, type ExportedOp, normalizeOp, type Operation } from '@did-plc/lib'

/** One operation of the log, with what it followed and who signed it. */
export interface OperationStep {
  entry: ExportedOp
  /** The state it followed (its `prev`), or undefined for the operation that created the DID. */
  before?: Operation
  /** The state it left, or undefined for a tombstone. */
  after?: Operation
  /** The rotation key that signed it (of `before`, or its own for the first), if any verifies it. */
  signedBy?: string
  /** `signedBy`'s rank in the keys that could sign it: 1 is the strongest. */
  signerRank?: number
  /** CIDs of the operations it nullified when it arrived (a fork), oldest first. */
  nullifies: string[]
}

/** The steps of `log` (`Client.getAuditableLog`), in the log's order. */
export async function replayAuditLog(log: ExportedOp[]): Promise<OperationStep[]> {
  const steps: OperationStep[] = []
  // The operations that were active after each arrival: a fork cuts this chain back to its prev.
  let chain: OperationStep[] = []
  for (const entry of log) {
    const op = entry.operation
    const after = op.type === 'plc_tombstone' ? undefined : normalizeOp(op)
    const prev = op.prev
    let before: Operation | undefined
    let nullifies: string[] = []
    if (prev !== null) {
      // PLC accepted it, so its prev was active; a log that says otherwise leaves it unverified.
      const at = chain.findIndex((s) => s.entry.cid === prev)
      if (at >= 0) {
        before = chain[at]?.after
        nullifies = chain.slice(at + 1).map((s) => s.entry.cid)
        chain = chain.slice(0, at + 1)
      }
    }
    const allowed = prev === null ? after?.rotationKeys : before?.rotationKeys
    const signedBy = allowed ? await assureValidSig(allowed, op).catch(() => undefined) : undefined
    const step: OperationStep = {
      entry,
      ...(before && { before }),
      ...(after && { after }),
      ...(signedBy && { signedBy, signerRank: (allowed as string[]).indexOf(signedBy) + 1 }),
      nullifies,
    }
    chain.push(step)
    steps.push(step)
  }
  return steps
}
