import type { InboundTransfer } from './inbound-transfer.ts'
import type { SizeEstimate } from './migrate-size-estimate.ts'

/**
 * The checklist's size estimate of each account, kept in memory for its progress page (a source
 * without a size hint): by DID from the checklist for an hour, then by the transfer it started.
 * Only a display aid: a restarted server shows progress without it.
 */
export class Estimates {
  private readonly byDid = new Map<string, { estimate: SizeEstimate; at: number }>()
  private readonly byTransfer = new Map<string, SizeEstimate>()

  remember(did: string, estimate: SizeEstimate): void {
    const now = Date.now()
    for (const [key, held] of this.byDid) if (now - held.at > 60 * 60_000) this.byDid.delete(key)
    this.byDid.set(did, { estimate, at: now })
  }

  /** The estimate for `t`'s page while it copies; the first look binds it to the transfer. */
  of(t: InboundTransfer): SizeEstimate | undefined {
    if (t.status === 'completed' || t.status === 'failed' || t.expected) {
      this.byTransfer.delete(t.transferId)
      return undefined
    }
    const bound = this.byTransfer.get(t.transferId)
    if (bound) return bound
    const held = this.byDid.get(t.did)
    if (!held || held.at < t.createdAt - 60 * 60_000) return undefined
    this.byDid.delete(t.did)
    this.byTransfer.set(t.transferId, held.estimate)
    return held.estimate
  }
}
