import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { type Job, PgBoss } from 'pg-boss'
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

/** What a job row carries: the handler's input plus what the queue needs to route it. */
interface JobData {
  kind: JobKind
  source: string
  key: string
  data: Record<string, unknown>
}

export interface PgBossQueueOptions extends QueueLimits {
  // `perSource` is stored with the queue by the first process that opens it; `setPerSource` changes it.
  /** `postgres://user@host:port/db` */
  connectionString: string
  /** One queue per name; workers and operators of one fleet use the same (default `pds-transfer`). */
  name?: string
  /**
   * A worker that stops touching its job for this long is taken for dead and its job runs again
   * elsewhere (pg-boss's minimum is 10). The cost of a short one is a touch per job every half.
   */
  heartbeatSeconds?: number
  /** How often dead workers are looked for (default 10 s). */
  superviseIntervalSeconds?: number
  /** The first retry's delay, doubling up to 5 minutes (default 2 s; set when the queue is created). */
  retryDelaySeconds?: number
  /** How long a worker waits between looks at an empty queue (default 1 s). */
  pollMs?: number
}

const PG_STATE: Record<string, JobState> = {
  created: 'queued',
  retry: 'retry',
  active: 'active',
  completed: 'completed',
  failed: 'failed',
  cancelled: 'cancelled',
}

/**
 * A `JobQueue` on PostgreSQL through pg-boss, shared by any number of worker processes.
 * pg-boss gives durable rows, claims with `SKIP LOCKED`, one pending job per key (policy
 * `exclusive` with the job's key), retries and heartbeats (a dead worker's job is retried).
 * Two things it does not give are added here, in the same database: the per-source limit holds
 * exactly (pg-boss's `groupConcurrency` counts active jobs in the claiming statement's snapshot,
 * so two workers claiming at once can both see room; claims are serialized with a transaction
 * advisory lock, see spec/jobs.md), and pause (a row every worker reads before it claims).
 * Progress is a row per job, kept across attempts.
 */
export class PgBossJobQueue implements JobQueue {
  readonly name: string
  private readonly boss: PgBoss
  private readonly pool: pg.Pool
  private readonly maxAttempts: number
  private readonly heartbeatSeconds: number
  private readonly pollMs: number
  private readonly schema = 'pgboss'

  private constructor(options: PgBossQueueOptions) {
    this.name = options.name ?? 'pds-transfer'
    this.maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS
    this.heartbeatSeconds = options.heartbeatSeconds ?? 30
    this.pollMs = options.pollMs ?? 1000
    const supervise = options.superviseIntervalSeconds ?? 10
    this.boss = new PgBoss({
      connectionString: options.connectionString,
      schema: this.schema,
      superviseIntervalSeconds: supervise,
      monitorIntervalSeconds: supervise,
      max: 4,
    })
    this.pool = new pg.Pool({ connectionString: options.connectionString, max: 4 })
  }

  /** Connects, creating pg-boss's schema, the queue and our two tables where absent. */
  static async open(options: PgBossQueueOptions): Promise<PgBossJobQueue> {
    const queue = new PgBossJobQueue(options)
    // Without listeners an 'error' (the server restarting) would end the process.
    queue.boss.on('error', () => {})
    queue.pool.on('error', () => {})
    await queue.boss.start()
    if (!(await queue.boss.getQueue(queue.name)))
      await queue.boss
        .createQueue(queue.name, {
          policy: 'exclusive',
          retryLimit: queue.maxAttempts - 1,
          retryDelay: options.retryDelaySeconds ?? 2,
          retryBackoff: true,
          retryDelayMax: 300,
          heartbeatSeconds: queue.heartbeatSeconds,
          // Moves of large accounts run for hours; the heartbeat, not this, finds dead workers.
          expireInSeconds: 24 * 3600,
        })
        .catch(async (err) => {
          // Another process created it between the check and here.
          if (!(await queue.boss.getQueue(queue.name))) throw err
        })
    // One statement string runs as one transaction: the lock keeps processes starting together
    // from racing on CREATE … IF NOT EXISTS (which can fail on a unique index when concurrent).
    await queue.pool.query(`
      SELECT pg_advisory_xact_lock(hashtext('pds_jobs.schema'));
      CREATE SCHEMA IF NOT EXISTS pds_jobs;
      CREATE TABLE IF NOT EXISTS pds_jobs.progress (
        job_id text PRIMARY KEY, progress jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
      CREATE TABLE IF NOT EXISTS pds_jobs.paused (queue text PRIMARY KEY, since timestamptz NOT NULL DEFAULT now());
      CREATE TABLE IF NOT EXISTS pds_jobs.limits (queue text PRIMARY KEY, per_source int NOT NULL);
    `)
    // The limit is the queue's, not a worker's: the first to open the queue sets it.
    await queue.pool.query(
      'INSERT INTO pds_jobs.limits (queue, per_source) VALUES ($1, $2) ON CONFLICT DO NOTHING',
      [queue.name, options.perSource ?? DEFAULT_PER_SOURCE],
    )
    return queue
  }

  async enqueue(spec: JobSpec): Promise<string | null> {
    const data: JobData = { kind: spec.kind, source: spec.source, key: spec.key, data: spec.data }
    return this.boss.send(this.name, data, { singletonKey: spec.key, group: { id: spec.source } })
  }

  async work(handlers: Partial<Record<JobKind, JobHandler>>, options: WorkOptions = {}): Promise<Worker> {
    const concurrency = options.concurrency ?? 4
    const stop = new AbortController()
    const running = new Set<AbortController>()
    const slot = async () => {
      while (!stop.signal.aborted) {
        let job: Job<JobData> | undefined
        try {
          job = (await this.isPaused()) ? undefined : await this.claim()
        } catch (err) {
          options.onQueueError?.(err)
        }
        if (!job) {
          await sleep(this.pollMs, undefined, { signal: stop.signal }).catch(() => {})
          continue
        }
        const abort = new AbortController()
        running.add(abort)
        try {
          await this.run(job, handlers, abort.signal, options)
        } finally {
          running.delete(abort)
        }
      }
    }
    const slots = Array.from({ length: concurrency }, slot)
    return {
      stop: async ({ graceMs = 30_000 } = {}) => {
        stop.abort()
        const timer = setTimeout(() => {
          for (const r of running) r.abort(new Error('the worker is stopping'))
        }, graceMs)
        await Promise.all(slots)
        clearTimeout(timer)
      },
    }
  }

  async list(filter: { state?: JobState; limit?: number } = {}): Promise<JobRecord[]> {
    const state = filter.state && Object.keys(PG_STATE).find((k) => PG_STATE[k] === filter.state)
    const { rows } = await this.pool.query(
      `SELECT id, state, data, singleton_key, retry_count, started_on, output, created_on
         FROM ${this.schema}.job WHERE name = $1 ${state ? 'AND state = $3' : ''}
         ORDER BY created_on DESC LIMIT $2`,
      [this.name, filter.limit ?? 1000, ...(state ? [state] : [])],
    )
    return rows.map((row) => {
      const data = row.data as JobData
      return {
        id: row.id,
        kind: data.kind,
        data: data.data,
        source: data.source,
        key: row.singleton_key,
        state: PG_STATE[row.state] ?? 'queued',
        attempts: row.started_on ? row.retry_count + 1 : 0,
        output: row.output,
        createdAt: row.created_on,
      }
    })
  }

  async counts(): Promise<JobCounts> {
    const { rows } = await this.pool.query(
      `SELECT state, count(*)::int AS n FROM ${this.schema}.job WHERE name = $1 GROUP BY state`,
      [this.name],
    )
    const counts = emptyCounts()
    for (const row of rows) {
      const state = PG_STATE[row.state]
      if (state) counts[state] += row.n
    }
    return counts
  }

  async pause(): Promise<void> {
    await this.pool.query('INSERT INTO pds_jobs.paused (queue) VALUES ($1) ON CONFLICT DO NOTHING', [
      this.name,
    ])
  }

  async resume(): Promise<void> {
    await this.pool.query('DELETE FROM pds_jobs.paused WHERE queue = $1', [this.name])
  }

  /** Changes the per-source limit for every worker of the queue (from their next claim). */
  async setPerSource(limit: number): Promise<void> {
    if (!Number.isInteger(limit) || limit < 1)
      throw new Error('the per-source limit is a whole number, 1 or more')
    await this.pool.query(
      `INSERT INTO pds_jobs.limits (queue, per_source) VALUES ($1, $2)
       ON CONFLICT (queue) DO UPDATE SET per_source = excluded.per_source`,
      [this.name, limit],
    )
  }

  async perSourceLimit(): Promise<number> {
    const { rows } = await this.pool.query('SELECT per_source FROM pds_jobs.limits WHERE queue = $1', [
      this.name,
    ])
    return rows[0]?.per_source ?? DEFAULT_PER_SOURCE
  }

  async isPaused(): Promise<boolean> {
    const { rowCount } = await this.pool.query('SELECT 1 FROM pds_jobs.paused WHERE queue = $1', [this.name])
    return (rowCount ?? 0) > 0
  }

  async retryFailed(): Promise<RetryResult> {
    const result: RetryResult = { retried: 0, superseded: 0 }
    // One at a time: a failed job whose key was queued again since would make a batch retry fail
    // whole on the `exclusive` policy's unique index (found by trying it).
    for (const job of await this.list({ state: 'failed', limit: 100_000 })) {
      try {
        await this.boss.retry(this.name, job.id)
        result.retried++
      } catch (err) {
        if ((err as { code?: string }).code !== '23505') throw err
        result.superseded++
      }
    }
    return result
  }

  async close(): Promise<void> {
    await this.boss.stop({ graceful: false })
    await this.pool.end()
  }

  /**
   * Claims one job under the per-source limit. The advisory lock makes claims one at a time
   * across all workers, so each claim's count of active jobs per source includes every claim
   * before it; it is held only for the claiming statement.
   */
  private async claim(): Promise<Job<JobData> | undefined> {
    const client = await this.pool.connect()
    // A connection the server ends mid-claim (a restart) errors here, not on the pool: without a
    // listener that would end the process. The failed query rejects, the claim is tried again.
    let broken: unknown
    const onError = (err: unknown) => {
      broken = err
    }
    client.on('error', onError)
    try {
      await client.query('BEGIN')
      await client.query(`SELECT pg_advisory_xact_lock(hashtext('pds_jobs.claim:' || $1))`, [this.name])
      const limit = await client.query('SELECT per_source FROM pds_jobs.limits WHERE queue = $1', [this.name])
      const [job] = await this.boss.fetch<JobData>(this.name, {
        groupConcurrency: limit.rows[0]?.per_source ?? DEFAULT_PER_SOURCE,
        db: { executeSql: (text, values) => client.query(text, values) },
      })
      await client.query('COMMIT')
      return job
    } catch (err) {
      broken ??= err
      await client.query('ROLLBACK').catch(() => {})
      throw err
    } finally {
      client.off('error', onError)
      // A client that failed is closed, not put back for the next claim.
      client.release(broken instanceof Error ? broken : undefined)
    }
  }

  private async run(
    job: Job<JobData>,
    handlers: Partial<Record<JobKind, JobHandler>>,
    signal: AbortSignal,
    options: WorkOptions,
  ): Promise<void> {
    const attempt = { id: job.id, retryCount: job.retryCount }
    const handler = handlers[job.data.kind]
    // The heartbeat: while it is touched, no other worker takes the job.
    const beat = setInterval(
      () => this.boss.touch(this.name, attempt).catch((err) => options.onQueueError?.(err)),
      (this.heartbeatSeconds * 1000) / 3,
    )
    let error: unknown
    let output: unknown
    try {
      if (!handler) throw new Error(`this worker runs no ${job.data.kind} jobs`)
      const saved = await this.pool.query('SELECT progress FROM pds_jobs.progress WHERE job_id = $1', [
        job.id,
      ])
      output = await handler(job.data.data, {
        id: job.id,
        attempt: job.retryCount + 1,
        progress: saved.rows[0]?.progress,
        saveProgress: (progress) => this.saveProgress(job.id, progress, options),
        signal,
      })
    } catch (err) {
      error = err
    } finally {
      clearInterval(beat)
    }
    // Settling is retried through an outage of the server: a result lost here would run the
    // job again. The attempt fences it: once the job was taken for dead, this changes nothing.
    for (let wait = 500; ; wait = Math.min(wait * 2, 5000)) {
      try {
        if (error === undefined) await this.boss.complete(this.name, attempt, asObject(output))
        else if (signal.aborted) await this.boss.fail(this.name, attempt, { error: 'the worker stopped' })
        else await this.boss.fail(this.name, attempt, { error: (error as Error)?.message ?? String(error) })
        break
      } catch (err) {
        options.onQueueError?.(err)
        await sleep(wait)
      }
    }
    options.onSettled?.({ id: job.id, kind: job.data.kind, key: job.data.key }, error)
  }

  private async saveProgress(jobId: string, progress: unknown, options: WorkOptions): Promise<void> {
    try {
      await this.pool.query(
        `INSERT INTO pds_jobs.progress (job_id, progress) VALUES ($1, $2)
         ON CONFLICT (job_id) DO UPDATE SET progress = excluded.progress, updated_at = now()`,
        [jobId, JSON.stringify(progress)],
      )
    } catch (err) {
      options.onQueueError?.(err)
    }
  }
}

function asObject(value: unknown): object | null {
  if (value === undefined || value === null) return null
  return typeof value === 'object' && !Array.isArray(value) ? value : { value }
}
