import { setTimeout as sleep } from 'node:timers/promises'
import {
  InProcessJobQueue,
  type JobContext,
  type JobHandler,
  type JobQueue,
  PgBossJobQueue,
} from '@pds-transfer/jobs'
import { PgBoss } from 'pg-boss'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startPostgres } from '../src/harness/postgres.ts'

/**
 * Issue 23: the promises every `JobQueue` keeps, checked on the in-process default and on
 * PostgreSQL through pg-boss (a real server from scripts/pg; each pg "worker" is its own queue
 * client with its own connections, as separate processes would be).
 */
let pg: Awaited<ReturnType<typeof startPostgres>>
beforeAll(async () => {
  pg = await startPostgres()
}, 600_000)
afterAll(async () => {
  await pg?.destroy()
})

interface Backend {
  name: string
  /** Queue clients sharing one queue: `clients[0]` enqueues, each runs one worker. */
  open(clients: number, limits?: { perSource?: number; maxAttempts?: number }): Promise<JobQueue[]>
}

let queues = 0
const backends: Backend[] = [
  {
    name: 'in-process',
    async open(clients, limits) {
      const queue = new InProcessJobQueue(limits)
      return Array.from({ length: clients }, () => queue)
    },
  },
  {
    name: 'pg-boss',
    async open(clients, limits) {
      const name = `contract-${++queues}`
      const options = {
        connectionString: pg.url,
        name,
        pollMs: 50,
        retryDelaySeconds: 1,
        ...limits,
      }
      const first = await PgBossJobQueue.open(options)
      const rest = await Promise.all(Array.from({ length: clients - 1 }, () => PgBossJobQueue.open(options)))
      return [first, ...rest]
    },
  },
]

async function until(check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > end) throw new Error('timed out')
    await sleep(50)
  }
}

describe.each(backends)('job queue contract: $name', (backend) => {
  it('holds the per-source limit across workers, and runs every job once', async () => {
    const clients = await backend.open(3, { perSource: 2 })
    const [queue] = clients as [JobQueue]
    const running = new Map<string, number>()
    const max = new Map<string, number>()
    const runs = new Map<string, number>()
    const handler: JobHandler = async (data) => {
      const source = String(data.source)
      running.set(source, (running.get(source) ?? 0) + 1)
      max.set(source, Math.max(max.get(source) ?? 0, running.get(source) ?? 0))
      runs.set(String(data.n), (runs.get(String(data.n)) ?? 0) + 1)
      await sleep(150)
      running.set(source, (running.get(source) ?? 1) - 1)
      return { n: data.n }
    }
    for (let n = 0; n < 16; n++) {
      const source = n % 2 ? 'https://a.example' : 'https://b.example'
      await queue.enqueue({ kind: 'backup', data: { n, source }, source, key: `job:${n}` })
    }
    const workers = await Promise.all(clients.map((c) => c.work({ backup: handler }, { concurrency: 3 })))
    await until(async () => (await queue.counts()).completed === 16)
    await Promise.all(workers.map((w) => w.stop()))
    // 9 slots for 2 sources: only the limit keeps each source at 2.
    expect(Object.fromEntries(max)).toEqual({ 'https://a.example': 2, 'https://b.example': 2 })
    expect([...runs.values()].every((n) => n === 1)).toBe(true)
    expect(runs.size).toBe(16)
    for (const c of new Set(clients)) await c.close()
  })

  it('keeps one pending job per key', async () => {
    const [queue] = (await backend.open(1)) as [JobQueue]
    const spec = { kind: 'backup' as const, data: {}, source: 'https://a.example', key: 'backup:did:plc:x' }
    expect(await queue.enqueue(spec)).toEqual(expect.any(String))
    expect(await queue.enqueue(spec)).toBeNull()
    expect((await queue.counts()).queued).toBe(1)
    await queue.close()
  })

  it('leaves a failed job failed when its key was queued again since, and retries the others', async () => {
    const [queue] = (await backend.open(1, { maxAttempts: 1 })) as [JobQueue]
    const spec = (key: string) => ({ kind: 'backup' as const, data: {}, source: 'https://a.example', key })
    await queue.enqueue(spec('again'))
    await queue.enqueue(spec('alone'))
    const worker = await queue.work({
      backup: async () => {
        throw new Error('down')
      },
    })
    await until(async () => (await queue.counts()).failed === 2)
    await worker.stop()
    expect(await queue.enqueue(spec('again'))).toEqual(expect.any(String))
    expect(await queue.retryFailed()).toEqual({ retried: 1, superseded: 1 })
    const counts = await queue.counts()
    expect(counts.failed).toBe(1)
    expect(counts.queued + counts.retry).toBe(2)
    await queue.close()
  })

  it('runs a failed attempt again with the progress it saved, and fails it after its attempts', async () => {
    const [queue] = (await backend.open(1, { maxAttempts: 2 })) as [JobQueue]
    const seen: unknown[] = []
    const handler: JobHandler = async (data, context: JobContext) => {
      seen.push(context.progress)
      await context.saveProgress({ done: context.attempt })
      if (data.fail === 'always' || context.attempt === 1) throw new Error(`attempt ${context.attempt} broke`)
      return { ok: true }
    }
    await queue.enqueue({ kind: 'backup', data: {}, source: 'https://a.example', key: 'once' })
    await queue.enqueue({
      kind: 'backup',
      data: { fail: 'always' },
      source: 'https://a.example',
      key: 'never',
    })
    const worker = await queue.work({ backup: handler }, { concurrency: 2 })
    await until(async () => {
      const c = await queue.counts()
      return c.completed === 1 && c.failed === 1
    })
    await worker.stop()
    // The second attempt of each saw the first's progress.
    expect(seen.filter((p) => p === undefined)).toHaveLength(2)
    expect(seen.filter((p) => JSON.stringify(p) === '{"done":1}')).toHaveLength(2)
    const [failed] = await queue.list({ state: 'failed' })
    expect(failed).toMatchObject({ key: 'never', attempts: 2, output: { error: 'attempt 2 broke' } })

    // An operator's retry: it runs again, with what it saved.
    expect(await queue.retryFailed()).toEqual({ retried: 1, superseded: 0 })
    const again = await queue.work({ backup: async (_d, c) => ({ resumedFrom: c.progress }) })
    await until(async () => (await queue.counts()).completed === 2)
    await again.stop()
    const done = await queue.list({ state: 'completed' })
    expect(done.find((j) => j.key === 'never')?.output).toEqual({ resumedFrom: { done: 2 } })
    await queue.close()
  })

  it('starts nothing while paused, on any worker', async () => {
    const clients = await backend.open(2)
    const [queue, other] = clients as [JobQueue, JobQueue]
    await queue.pause()
    expect(await other.isPaused()).toBe(true)
    await queue.enqueue({ kind: 'backup', data: {}, source: 'https://a.example', key: 'paused' })
    let ran = 0
    const workers = await Promise.all(
      clients.map((c) =>
        c.work({
          backup: async () => {
            ran++
          },
        }),
      ),
    )
    await sleep(600)
    expect(ran).toBe(0)
    expect((await queue.counts()).queued).toBe(1)
    await other.resume()
    await until(async () => (await queue.counts()).completed === 1)
    expect(ran).toBe(1)
    await Promise.all(workers.map((w) => w.stop()))
    for (const c of new Set(clients)) await c.close()
  })
})

/**
 * Why `PgBossJobQueue` serializes its claims (spec/jobs.md): pg-boss 12.38's `groupConcurrency`
 * counts a group's active jobs inside each claiming statement, so claims made at the same moment
 * on separate connections all see room and together exceed the limit. If pg-boss makes it strict,
 * this fails, and the advisory lock in `PgBossJobQueue.claim` can go.
 */
describe("pg-boss's groupConcurrency on its own", () => {
  it('lets concurrent claims exceed the group limit', async () => {
    const boss = new PgBoss({ connectionString: pg.url, max: 10, supervise: false })
    boss.on('error', () => {})
    await boss.start()
    await boss.createQueue('bare-groups')
    let most = 0
    for (let round = 0; round < 20 && most <= 2; round++) {
      for (let i = 0; i < 10; i++)
        await boss.send('bare-groups', { i }, { group: { id: 'https://a.example' } })
      const claimed = (
        await Promise.all(Array.from({ length: 9 }, () => boss.fetch('bare-groups', { groupConcurrency: 2 })))
      ).flat()
      most = Math.max(most, claimed.length)
      if (claimed.length > 0)
        await boss.complete(
          'bare-groups',
          claimed.map((j) => j.id),
        )
      await boss.deleteQueuedJobs('bare-groups')
    }
    await boss.stop({ graceful: false })
    expect(most).toBeGreaterThan(2)
  })
})
