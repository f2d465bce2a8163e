/**
 * Where a progress page measures its pace from: a window of the last 15 to 30 seconds of what
 * this process saw, so that a move resumed after a pause (a broken connection, a restart, a
 * night) shows its speed now, not its average since it was created. The window moves as the
 * page is looked at (its script asks every second, a page without scripts reloads every two).
 * Memory only: a restarted server starts a new window.
 */
import type { InboundTransfer } from './inbound-transfer.ts'
import { type PaceSample, sampleOf } from './migrate-html.ts'

/** How long a sample stands before the window moves on. */
const STEP_MS = 15_000
/** A transfer first looked at this long after its start has likely paused: measure from now. */
const FRESH_MS = 60_000

export class PaceWindow {
  private readonly samples = new Map<string, { base?: PaceSample; latest: PaceSample }>()

  /** The sample `t`'s pace is measured from (undefined: from its start), for a view at `now`. */
  since(t: InboundTransfer, now: number, copying: boolean): PaceSample | undefined {
    if (!copying) {
      this.samples.delete(t.transferId)
      return undefined
    }
    const current = sampleOf(t, now)
    const held = this.samples.get(t.transferId)
    // First look, or the copy started over (fewer bytes than before).
    if (!held || current.bytes < held.latest.bytes) {
      const base = now - t.createdAt > FRESH_MS ? current : undefined
      this.samples.set(t.transferId, { ...(base && { base }), latest: current })
      return base
    }
    if (now - held.latest.at >= STEP_MS) {
      held.base = held.latest
      held.latest = current
    }
    return held.base
  }
}
