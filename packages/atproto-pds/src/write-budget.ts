/**
 * The blob write buffers of one sink and the bytes handed to the disk and not yet written.
 * Invariant: at most `limit` bytes are queued at once (or one single write, whatever its size,
 * when nothing else is), so that writing in the background cannot let a fast stream pile up
 * in memory in front of a slow disk. Buffers come back once written and are handed out again:
 * a fresh 1 MiB buffer per blob made the garbage collector the destination's busiest code.
 */
export class WriteBudget {
  private queued = 0
  private waiters: Array<() => void> = []
  private readonly free: Buffer[] = []

  constructor(
    readonly limit: number,
    /** Size of the buffers `buffer()` hands out. */
    readonly bufferSize: number = 1 << 20,
  ) {}

  /** Bytes queued now. */
  get inFlight(): number {
    return this.queued
  }

  /** A buffer of `bufferSize` bytes (contents undefined), given back by `recycle` when done. */
  buffer(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.bufferSize)
  }

  /** Takes back a buffer from `buffer()` that nothing refers to any more. */
  recycle(buffer: Buffer): void {
    if (buffer.length === this.bufferSize && this.free.length * this.bufferSize < this.limit)
      this.free.push(buffer)
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
