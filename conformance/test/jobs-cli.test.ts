import { setTimeout as sleep } from 'node:timers/promises'
import { PgBossJobQueue, runJobsCli } from '@pds-transfer/jobs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startPostgres } from '../src/harness/postgres.ts'

/** Issue 23: the operator's commands of `pds-jobs` on a PostgreSQL queue. */
describe('pds-jobs, the operator commands', () => {
  let pg: Awaited<ReturnType<typeof startPostgres>>
  beforeAll(async () => {
    pg = await startPostgres()
  }, 600_000)
  afterAll(async () => {
    await pg?.destroy()
  })

  function cli(queue: string) {
    const io = { out: [] as string[], err: [] as string[] }
    const run = (...argv: string[]) =>
      runJobsCli(
        argv,
        { out: (t) => io.out.push(t), err: (t) => io.err.push(t) },
        { env: { PDS_JOBS_DATABASE_URL: pg.url, PDS_JOBS_QUEUE: queue } },
      )
    return { io, run }
  }

  it('says what is missing or wrong, with exit code 2', async () => {
    const io = { out: [] as string[], err: [] as string[] }
    const sink = { out: (t: string) => io.out.push(t), err: (t: string) => io.err.push(t) }
    expect(await runJobsCli(['status'], sink, { env: {} })).toBe(2)
    expect(io.err.join('')).toContain('missing --database URL (or PDS_JOBS_DATABASE_URL)')
    expect(await runJobsCli(['list', '--state', 'stuck'], sink, { env: {} })).toBe(2)
    expect(io.err.join('')).toContain('unknown state stuck')
    expect(await runJobsCli(['enqueue-backup', 'alice.test'], sink, { env: {} })).toBe(2)
    expect(io.err.join('')).toContain('alice.test is not a DID')
    const { run, io: cliIo } = cli('usage')
    expect(await run('limit', '--per-source', '0')).toBe(2)
    expect(cliIo.err.join('')).toContain('0 is not a whole number, 1 or more')
  })

  it('pauses and resumes every worker, sets the per-source limit, lists and retries failed jobs', async () => {
    const name = 'operators'
    // A queue whose jobs get one attempt, and a worker whose backups all fail.
    const queue = await PgBossJobQueue.open({ connectionString: pg.url, name, maxAttempts: 1, pollMs: 50 })
    const { io, run } = cli(name)

    expect(await run('pause')).toBe(0)
    expect(await run('status')).toBe(0)
    expect(io.out.at(-1)).toMatch(/^PAUSED; per source at once: 2\nqueued {5}0\n/)
    expect(await run('limit', '--per-source', '3')).toBe(0)
    expect(await queue.perSourceLimit()).toBe(3)

    await queue.enqueue({
      kind: 'backup',
      data: { did: 'did:plc:ewvi7nxzyoun6zhxrhs64oiz' },
      source: 'https://pds.example',
      key: 'backup:did:plc:ewvi7nxzyoun6zhxrhs64oiz',
    })
    let runs = 0
    const worker = await queue.work({
      backup: async () => {
        runs++
        throw new Error('the PDS answered 503')
      },
    })
    await sleep(400)
    expect(runs).toBe(0)
    expect(await run('resume')).toBe(0)
    for (const end = Date.now() + 20_000; (await queue.counts()).failed < 1; await sleep(50))
      if (Date.now() > end) throw new Error('the job did not fail')
    await worker.stop()

    io.out.length = 0
    expect(await run('status')).toBe(0)
    const status = io.out.join('\n')
    expect(status).toMatch(/^running; per source at once: 3\n/)
    expect(status).toMatch(/failed {5}1/)
    expect(status).toMatch(
      /FAILED \S+ failed backup did:plc:ewvi7nxzyoun6zhxrhs64oiz from https:\/\/pds.example, attempts 1: the PDS answered 503/,
    )
    expect(status).toContain('"pds-jobs retry-failed" queues them again')

    io.out.length = 0
    expect(await run('retry-failed')).toBe(0)
    expect(io.out).toEqual(['queued 1 failed jobs again'])
    expect(await run('list', '--state', 'retry')).toBe(0)
    expect(io.out.at(-1)).toMatch(/ retry backup did:plc:ewvi7nxzyoun6zhxrhs64oiz /)
    await queue.close()
  })
})
