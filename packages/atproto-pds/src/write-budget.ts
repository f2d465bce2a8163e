/**
 * Bytes handed to the disk and not yet written, shared by all the blob uploads of one sink.
 * Invariant: at most `limit` bytes are queued at once (or one single write, whatever its size,
 * when nothing else is), so that writing in the background cannot let a fast stream pile up
 * in memory in front of a slow disk.
 */
export class WriteBudget {
  private queued = 0
  private waiters: Array<() => void> = []

  constructor(readonly limit: number) {}

  /** Bytes queued now. */
  get inFlight(): number {
    return this.queued
  }

  /** Resolves once `bytes` more may be queued, and counts them as queued. */
  async reserve(bytes: number): Promise<void> {
    while (this.queued > 0 && this.queued + bytes > this.limit)
      await new Promise<void>((resolve) => this.waiters.push(resolve))
    this.queued += bytes
  }

  /** Bytes written (or given up on): waiting writers may go on. */
  release(bytes: number): void {
    this.queued -= bytes
    const waiters = this.waiters
    this.waiters = []
    for (const wake of waiters) wake()
  }
}
