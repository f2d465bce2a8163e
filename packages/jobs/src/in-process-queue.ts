import { randomUUID } from 'node:crypto'
import {
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_PER_SOURCE,
  emptyCounts,
  type JobCounts,
  type JobHandler,
  type JobKind,
  type JobQueue,
  type JobRecord,
  type JobSpec,
  type JobState,
  type QueueLimits,
  type RetryResult,
  type Worker,
  type WorkOptions,
} from './job-queue.ts'

interface HeldJob {
  record: JobRecord
  progress: unknown
}

/**
 * The default `JobQueue`: jobs in this process's memory, for one process with nothing else to
 * run (the CLI without `--database`, an embedded engine). It keeps the queue's promises between
 * the workers of this process (per-source limit, one job per key, retries with saved progress,
 * pause); it does not survive the process, which is what `PgBossJobQueue` is for.
 */
export class InProcessJobQueue implements JobQueue {
  private readonly jobs = new Map<string, HeldJob>()
  private readonly perSource: number
  private readonly maxAttempts: number
  private paused = false
  /** Wakes every worker's scheduler when something changes. */
  private readonly wakers = new Set<() => void>()

  constructor(limits: QueueLimits = {}) {
    this.perSource = limits.perSource ?? DEFAULT_PER_SOURCE
    this.maxAttempts = limits.maxAttempts ?? DEFAULT_MAX_ATTEMPTS
  }

  async enqueue(spec: JobSpec): Promise<string | null> {
    for (const held of this.jobs.values())
      if (held.record.key === spec.key && isPending(held.record.state)) return null
    const id = randomUUID()
    this.jobs.set(id, {
      record: { id, ...spec, state: 'queued', attempts: 0, output: null, createdAt: new Date() },
      progress: undefined,
    })
    this.wake()
    return id
  }

  async work(handlers: Partial<Record<JobKind, JobHandler>>, options: WorkOptions = {}): Promise<Worker> {
    const concurrency = options.concurrency ?? 4
    const running = new Map<string, { done: Promise<void>; abort: AbortController }>()
    let stopping = false
    const schedule = () => {
      while (!stopping && !this.paused && running.size < concurrency) {
        const held = this.next(handlers)
        if (!held) return
        const abort = new AbortController()
        const done = this.run(held, handlers[held.record.kind] as JobHandler, abort.signal, options).finally(
          () => {
            running.delete(held.record.id)
            this.wake()
          },
        )
        running.set(held.record.id, { done, abort })
      }
    }
    this.wakers.add(schedule)
    schedule()
    return {
      stop: async ({ graceMs = 30_000 } = {}) => {
        stopping = true
        this.wakers.delete(schedule)
        const timer = setTimeout(() => {
          for (const r of running.values()) r.abort.abort(new Error('the worker is stopping'))
        }, graceMs)
        await Promise.all([...running.values()].map((r) => r.done))
        clearTimeout(timer)
      },
    }
  }

  async list(filter: { state?: JobState; limit?: number } = {}): Promise<JobRecord[]> {
    return [...this.jobs.values()]
      .map((h) => ({ ...h.record }))
      .filter((r) => !filter.state || r.state === filter.state)
      .reverse()
      .slice(0, filter.limit ?? 1000)
  }

  async counts(): Promise<JobCounts> {
    const counts = emptyCounts()
    for (const held of this.jobs.values()) counts[held.record.state]++
    return counts
  }

  async pause(): Promise<void> {
    this.paused = true
  }

  async resume(): Promise<void> {
    this.paused = false
    this.wake()
  }

  async isPaused(): Promise<boolean> {
    return this.paused
  }

  async retryFailed(): Promise<RetryResult> {
    const result: RetryResult = { retried: 0, superseded: 0 }
    const pendingKeys = new Set(
      [...this.jobs.values()].filter((h) => isPending(h.record.state)).map((h) => h.record.key),
    )
    for (const held of this.jobs.values()) {
      if (held.record.state !== 'failed') continue
      if (pendingKeys.has(held.record.key)) {
        result.superseded++
        continue
      }
      held.record.state = 'retry'
      held.record.output = null
      pendingKeys.add(held.record.key)
      result.retried++
    }
    this.wake()
    return result
  }

  /** Resolves once no job is queued, running or waiting for a retry. */
  whenIdle(): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        for (const held of this.jobs.values()) if (isPending(held.record.state)) return
        this.wakers.delete(check)
        resolve()
      }
      this.wakers.add(check)
      check()
    })
  }

  async close(): Promise<void> {
    this.wakers.clear()
  }

  /** The oldest waiting job this worker can run whose source is under its limit. */
  private next(handlers: Partial<Record<JobKind, JobHandler>>): HeldJob | undefined {
    const active = new Map<string, number>()
    for (const held of this.jobs.values())
      if (held.record.state === 'active')
        active.set(held.record.source, (active.get(held.record.source) ?? 0) + 1)
    for (const held of this.jobs.values()) {
      const { record } = held
      if (record.state !== 'queued' && record.state !== 'retry') continue
      if (!handlers[record.kind] || (active.get(record.source) ?? 0) >= this.perSource) continue
      record.state = 'active'
      record.attempts++
      return held
    }
    return undefined
  }

  private async run(held: HeldJob, handler: JobHandler, signal: AbortSignal, options: WorkOptions) {
    const { record } = held
    let error: unknown
    try {
      record.output = await handler(record.data, {
        id: record.id,
        attempt: record.attempts,
        progress: held.progress,
        saveProgress: async (progress) => {
          held.progress = progress
        },
        signal,
      })
      record.state = 'completed'
    } catch (err) {
      error = err
      // A job its worker gave up on (stopping) waits for another worker, whatever it threw.
      record.state = signal.aborted || record.attempts < this.maxAttempts ? 'retry' : 'failed'
      record.output = { error: (err as Error)?.message ?? String(err) }
    }
    options.onSettled?.({ id: record.id, kind: record.kind, key: record.key }, error)
  }

  private wake(): void {
    for (const wake of [...this.wakers]) wake()
  }
}

function isPending(state: JobState): boolean {
  return state === 'queued' || state === 'active' || state === 'retry'
}
