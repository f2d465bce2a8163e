/**
 * Issue 23's benchmark: backups of many small accounts on a plain reference PDS (its own process)
 * as jobs on PostgreSQL (`scripts/pg`), run by 1, 2 and 4 `pds-jobs worker` processes (the real
 * CLI, 2 jobs each). Each worker count backs up every account into a fresh archive on a fresh
 * queue; timed from the queue's resume to its last completion. One PDS with the proposal's limit
 * of 2 would cap every row at 2 jobs at once, so this queue's per-source limit is raised to the
 * slots of the largest row: the rows then show what more workers buy on this machine, and the
 * "limit 2" row what the per-source limit costs. The last row repeats the first, last: the
 * difference between them is the run's drift (the PDS warming up, the shared machine's load).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { generateArchiveKeys, writeArchiveKeys } from '@pds-transfer/archive'
import { enqueuePdsBackups, PgBossJobQueue } from '@pds-transfer/jobs'
import { seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { ChildPeer } from '../src/harness/child-peer.ts'
import { freePort } from '../src/harness/destination-server.ts'
import { startPostgres } from '../src/harness/postgres.ts'

const PDS_SCRIPT = join(import.meta.dirname, 'reference-pds-process.ts')
const CLI = join(import.meta.dirname, '../../packages/jobs/src/cli.ts')

export interface JobsBenchRow {
  workers: number
  perSource: number
  accounts: number
  seconds: number
  accountsPerSecond: number
  /** Blob bytes (as uploaded) backed up per second. */
  blobMBps: number
}

export async function benchJobs(
  plcUrl: string,
  options: { accounts: number; images: number; imageBytes: number },
): Promise<JobsBenchRow[]> {
  const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-bench-jobs-'))
  const pds = ChildPeer.fork<{ url: string }>(PDS_SCRIPT, {
    DATA_DIR: join(dir, 'pds'),
    PORT: String(await freePort()),
    PLC_URL: plcUrl,
    PLAIN: '1',
  })
  const pg = await startPostgres()
  const children = new Set<ChildProcess>()
  try {
    const { url } = await pds.ready
    for (let i = 0; i < options.accounts; i += 5)
      await Promise.all(
        Array.from({ length: Math.min(5, options.accounts - i) }, (_, j) =>
          seedReferenceAccount(url, {
            handle: `bench${i + j}.test`,
            email: `bench${i + j}@example.com`,
            password: 'bench-password',
            posts: 10,
            images: options.images,
            imageBytes: options.imageBytes,
            follows: 0,
          }),
        ),
      )
    const keyFile = join(dir, 'key.json')
    await writeArchiveKeys(keyFile, await generateArchiveKeys())
    const blobMB = (options.accounts * options.images * options.imageBytes) / 1e6
    const rows: JobsBenchRow[] = []
    const plan: [number, number][] = [
      [1, 8],
      [2, 8],
      [4, 8],
      [4, 2],
      // The first row again (1 worker has 2 slots: the limit does not bind): how much of the
      // differences is the PDS warming up.
      [1, 2],
    ]
    for (const [workers, perSource] of plan) {
      const name = `bench-${workers}-${perSource}`
      const queue = await PgBossJobQueue.open({ connectionString: pg.url, name, perSource })
      await queue.pause()
      await enqueuePdsBackups(queue, url)
      const started: ChildProcess[] = []
      for (let w = 0; w < workers; w++) {
        const child = spawn(
          process.execPath,
          [
            '--import',
            'tsx',
            CLI,
            'worker',
            '--queue',
            name,
            '--archive',
            join(dir, `archive-${name}`),
            '--key',
            keyFile,
            '--plc',
            plcUrl,
            '--work',
            join(dir, 'tmp'),
            '--concurrency',
            '2',
          ],
          { env: { ...process.env, PDS_JOBS_DATABASE_URL: pg.url }, stdio: ['ignore', 'pipe', 'inherit'] },
        )
        children.add(child)
        started.push(child)
        // Ready once it says so (its imports take a few seconds on this machine).
        await new Promise<void>((resolve, reject) => {
          child.stdout?.on('data', (d: Buffer) => {
            if (d.toString().includes('running backup jobs')) resolve()
          })
          child.once('exit', (code) => reject(new Error(`worker exited with ${code}`)))
        })
      }
      const t0 = performance.now()
      await queue.resume()
      while ((await queue.counts()).completed < options.accounts) {
        const counts = await queue.counts()
        if (counts.failed > 0) throw new Error(`${counts.failed} backup jobs failed`)
        await sleep(100)
      }
      const seconds = (performance.now() - t0) / 1000
      for (const child of started) {
        child.kill('SIGTERM')
        await new Promise((resolve) => child.once('exit', resolve))
        children.delete(child)
      }
      await queue.close()
      rows.push({
        workers,
        perSource,
        accounts: options.accounts,
        seconds,
        accountsPerSecond: options.accounts / seconds,
        blobMBps: blobMB / seconds,
      })
    }
    return rows
  } finally {
    for (const child of children) child.kill('SIGKILL')
    await pds.call({ stop: true }).catch(() => {})
    await pds.kill()
    await pg.destroy()
    await rm(dir, { recursive: true, force: true })
  }
}
