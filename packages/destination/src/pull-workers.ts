/**
 * The pulls this process runs in the background, one worker slot each. Invariant: the
 * `maxConcurrent` limit is this process's own and is checked and taken with no await between,
 * so it is never exceeded; a slot is released when its pull ends (either way); `close` aborts
 * every pull in flight and waits for all of them, leaving their records for the next `recover`.
 */
import { EngineError } from './engine-error.ts'
import type { ImportFailure } from './import-failure.ts'
import type { PullSession } from './transfer-pull.ts'

/** A running pull: bytes held for the quota, its abort, a cancellation asked for, its end. */
export type PullEntry = PullSession['entry'] & { done: Promise<void> }

export class PullWorkers {
  /** The running pull of each transfer (its bytes count toward the in-flight quota). */
  readonly running = new Map<string, PullEntry>()
  /** Export sessions and reader signals in flight, aborted on `close`. */
  readonly aborts = new Set<AbortController>()
  private stopping = false

  constructor(private readonly maxConcurrent: number) {}

  /** Whether `close` was called: a pull stopped now is a shutdown, not a failure. */
  get closing(): boolean {
    return this.stopping
  }

  /** Throws `EngineError('LimitExceeded')` when every slot is taken. */
  assertFree(): void {
    if (this.running.size >= this.maxConcurrent) {
      throw new EngineError('LimitExceeded', `${this.running.size} transfers are running; try again later`)
    }
  }

  /** Takes a slot for `transferId` before its pull is launched; returns its release. */
  take(transferId: string): () => void {
    this.assertFree()
    this.running.set(transferId, { bytes: 0, done: Promise.resolve() })
    return () => this.running.delete(transferId)
  }

  /** Runs `pull` in the background in `transferId`'s slot, released when it ends. */
  launch(transferId: string, pull: (entry: PullEntry) => Promise<void>): void {
    const entry: PullEntry = { bytes: 0, done: Promise.resolve() }
    this.running.set(transferId, entry)
    entry.done = pull(entry).finally(() => this.running.delete(transferId))
  }

  /** The running pull of `transferId`, if any. */
  entry(transferId: string): PullEntry | undefined {
    return this.running.get(transferId)
  }

  /** Stops the running pull of `transferId` (if any) with `reason`, and waits for it to end. */
  async cancel(transferId: string, reason: ImportFailure): Promise<void> {
    const entry = this.running.get(transferId)
    if (!entry) return
    entry.cancel = reason
    entry.abort?.abort(reason)
    await entry.done
  }

  /** Stops every running pull without failing it (a shutdown) and waits for them to end. */
  async close(): Promise<void> {
    this.stopping = true
    for (const abort of this.aborts) abort.abort(new Error('the destination is shutting down'))
    await Promise.allSettled([...this.running.values()].map((r) => r.done))
  }
}
