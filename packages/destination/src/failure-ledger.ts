import type { FailureReason, InboundTransfer, InboundTransferStore } from './inbound-transfer.ts'
import { toFailure } from './transfer-failure.ts'

/**
 * Best-effort failure recording. Invariant: recording a failure never throws, and a failure is
 * always shown: when the store itself cannot write (a full disk), the failure is kept here and
 * `shown` returns it in place of the stored record, which is left as it was (so a later
 * `recover` resumes from what was verified); `flush` writes what it can once there is room,
 * before anything that judges the stored records (a new start, a recover).
 */
export class FailureLedger {
  private readonly pending = new Map<string, InboundTransfer>()

  constructor(private readonly store: InboundTransferStore) {}

  /** Records the failure, or keeps it in memory when the store cannot write; returns what is shown. */
  async fail(transferId: string, reason: FailureReason, message: string): Promise<InboundTransfer> {
    const failure = { status: 'failed', stage: 'failed', failure: { reason, message } } as const
    try {
      const t = await this.store.update(transferId, failure)
      this.pending.delete(transferId)
      return t
    } catch (err) {
      const t = await this.store.get(transferId).catch(() => undefined)
      const local = toFailure(err)
      const shown: InboundTransfer = {
        ...(t as InboundTransfer),
        ...failure,
        // The store's own failure is the one the user can act on (free space); said once.
        failure:
          local.reason === 'LocalStorage' && reason !== 'LocalStorage'
            ? { reason: 'LocalStorage', message: `${message}; and ${local.message}` }
            : { reason, message },
        updatedAt: Date.now(),
      }
      this.pending.set(transferId, shown)
      return shown
    }
  }

  /** A failure shown but not yet stored, if any. */
  shown(transferId: string): InboundTransfer | undefined {
    return this.pending.get(transferId)
  }

  /** Stores the failures only shown so far (what still cannot be written stays shown). */
  async flush(): Promise<void> {
    for (const [transferId, shown] of this.pending) {
      try {
        await this.store.update(transferId, {
          status: shown.status,
          stage: shown.stage,
          ...(shown.failure && { failure: shown.failure }),
        })
        this.pending.delete(transferId)
      } catch {
        // Still no room; tried again at the next start or recover.
      }
    }
  }
}
