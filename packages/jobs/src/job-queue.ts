/**
 * The seam between what a job does (a backup, next a move or a restore) and where jobs wait: an
 * in-process queue for one process (`InProcessJobQueue`), PostgreSQL through pg-boss for many
 * workers on one machine or several (`PgBossJobQueue`). Both keep the same promises, which the
 * contract test checks on each: a job runs on one worker at a time; a job whose worker dies runs
 * again with the progress it saved; at most `perSource` jobs of one source run at once, counted
 * across every worker of the queue; paused, no job starts.
 */

/** The kinds of job; each has its own handler. Moves and restores come next. */
export type JobKind = 'backup'

/** What to enqueue. */
export interface JobSpec {
  kind: JobKind
  /** The handler's input (JSON). */
  data: Record<string, unknown>
  /**
   * Who is read from, e.g. the PDS's origin: the per-source limit counts jobs by this. The
   * proposal's limit is 2 moves per source at once; backups keep to it too.
   */
  source: string
  /**
   * At most one job with this key is queued or running at once (e.g. `backup:<did>`): enqueueing
   * it again while one waits or runs returns `null`, so two runs never write one archive at once.
   */
  key: string
}

export type JobState = 'queued' | 'active' | 'retry' | 'completed' | 'failed' | 'cancelled'

/** A job as the queue holds it. */
export interface JobRecord {
  id: string
  kind: JobKind
  data: Record<string, unknown>
  source: string
  key: string
  state: JobState
  /** Attempts started so far, this one included (0 while it first waits). */
  attempts: number
  /** The handler's result once completed, or `{ error }` once failed. */
  output: unknown
  createdAt: Date
}

/** What a running handler is given. */
export interface JobContext {
  id: string
  /** 1 for the first attempt. */
  attempt: number
  /** What earlier attempts saved with `saveProgress` (undefined on the first). */
  progress: unknown
  /**
   * Saves the job's progress durably, for the attempt that follows if this one dies. Best effort:
   * it resolves even when the queue cannot be reached (the attempt goes on; a later save or the
   * next attempt catches up), so what is saved must only ever describe work that is done.
   */
  saveProgress(progress: unknown): Promise<void>
  /** Aborted when the worker stops; a handler stops early, its job runs again elsewhere. */
  signal: AbortSignal
}

export type JobHandler = (data: Record<string, unknown>, context: JobContext) => Promise<unknown>

export interface WorkOptions {
  /** Jobs this worker runs at once (default 4). */
  concurrency?: number
  /** Told of each attempt's end (for logs): the error when it failed. */
  onSettled?: (job: { id: string; kind: JobKind; key: string }, error: unknown) => void
  /** Told when the queue could not be reached (it is tried again). */
  onQueueError?: (error: unknown) => void
}

/** A running worker. */
export interface Worker {
  /** Stops taking jobs and waits for the running ones (aborting them after `graceMs`). */
  stop(options?: { graceMs?: number }): Promise<void>
}

export interface RetryResult {
  retried: number
  superseded: number
}

/** How many jobs are in each state. */
export type JobCounts = Record<JobState, number>

export interface JobQueue {
  /** Queues a job; its id, or null when a job with the same key is already queued or running. */
  enqueue(spec: JobSpec): Promise<string | null>
  /** Starts a worker that runs jobs of the kinds `handlers` names. */
  work(handlers: Partial<Record<JobKind, JobHandler>>, options?: WorkOptions): Promise<Worker>
  /** Jobs, newest first, optionally in one state. */
  list(filter?: { state?: JobState; limit?: number }): Promise<JobRecord[]>
  counts(): Promise<JobCounts>
  /** No job starts until `resume`, on any worker; running ones finish. */
  pause(): Promise<void>
  resume(): Promise<void>
  isPaused(): Promise<boolean>
  /**
   * Queues every failed job again (with its saved progress), except those whose key has a job
   * queued or running since (superseded: that one runs instead).
   */
  retryFailed(): Promise<RetryResult>
  close(): Promise<void>
}

/** Limits of a queue, which hold across all its workers. */
export interface QueueLimits {
  /** Jobs of one source running at once (default 2: the proposal's per-source limit). */
  perSource?: number
  /** Attempts before a job is failed (default 4). */
  maxAttempts?: number
}

export const DEFAULT_PER_SOURCE = 2
export const DEFAULT_MAX_ATTEMPTS = 4

export function emptyCounts(): JobCounts {
  return { queued: 0, active: 0, retry: 0, completed: 0, failed: 0, cancelled: 0 }
}
