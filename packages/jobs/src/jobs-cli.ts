/**
 * The pds-jobs command line (bin: `src/cli.ts`), as a function so tests run it in-process.
 * Usage in the package README and `--help`.
 */
import { tmpdir } from 'node:os'
import { parseArgs } from 'node:util'
import { readArchiveKeys } from '@pds-transfer/archive'
import { openArchiveStore } from '@pds-transfer/backup'
import { type DidResolver, PlcDidResolver } from '@pds-transfer/destination'
import { type BackupJobOutput, backupJobHandler, enqueueBackup, enqueuePdsBackups } from './backup-job.ts'
import { InProcessJobQueue } from './in-process-queue.ts'
import type { JobQueue, JobRecord } from './job-queue.ts'
import { PgBossJobQueue } from './pg-boss-queue.ts'

export const USAGE = `usage: pds-jobs <command> [options]

The queue is PostgreSQL (--database URL or PDS_JOBS_DATABASE_URL, e.g. postgres://user@host/db);
every worker and operator of one fleet names the same database (and --queue NAME, default
pds-transfer, or PDS_JOBS_QUEUE, to keep several fleets in one database).

commands
  enqueue-backups --pds URL            queue a backup of every active account the PDS lists
  enqueue-backup DID                   queue a backup of one account (its PDS from its DID document)
  worker --archive DIR --key FILE [--concurrency 4]
      run jobs until SIGINT or SIGTERM (running jobs finish; a killed worker's jobs are taken
      over by the others after the heartbeat, 30 s); --archive as for pds-backup (a directory
      or s3://bucket/prefix), shared by every worker
  status                               jobs by state, paused or not, the per-source limit, failures
  list [--state queued|active|retry|completed|failed|cancelled] [--limit N]
  pause | resume                       stop starting jobs on every worker (running ones finish) / go on
  retry-failed                         queue every failed job again (it resumes from its progress)
  limit --per-source N                 jobs of one PDS running at once across all workers (default 2)
  backup-all --pds URL --archive DIR --key FILE [--concurrency 4]
      without a database: back up every account of a PDS in this process, then exit

options
  --plc URL       PLC directory (default https://plc.directory)
  --work DIR      temporary files (default: the system's temporary directory)

exit code: 0 on success, 1 when something failed, 2 on bad usage`

export interface CliIo {
  out(text: string): void
  err(text: string): void
}

class UsageError extends Error {}

/** Runs the CLI with `argv` and returns the exit code. */
export async function runJobsCli(
  argv: string[],
  io: CliIo,
  deps: { resolver?: DidResolver; signal?: AbortSignal; env?: NodeJS.ProcessEnv } = {},
): Promise<number> {
  let parsed: ReturnType<typeof parse>
  try {
    parsed = parse(argv)
  } catch (err) {
    io.err(`${(err as Error).message}\n\n${USAGE}\n`)
    return 2
  }
  const { command, did, values } = parsed
  if (command === 'help') {
    io.out(USAGE)
    return 0
  }
  const env = deps.env ?? process.env
  const resolver = deps.resolver ?? new PlcDidResolver(values.plc ?? 'https://plc.directory')
  let queue: JobQueue | undefined
  try {
    if (command === 'backup-all') {
      const local = new InProcessJobQueue()
      queue = local
      const { accounts } = await enqueuePdsBackups(local, need(values.pds, '--pds'))
      io.out(`${accounts} accounts to back up`)
      const worker = await local.work(
        { backup: await backupHandler(values, resolver) },
        { concurrency: count(values.concurrency, 4), onSettled: report(io) },
      )
      await local.whenIdle()
      await worker.stop()
      const counts = await local.counts()
      io.out(`${counts.completed} of ${accounts} accounts backed up, ${counts.failed} failed`)
      return counts.failed > 0 ? 1 : 0
    }
    const database = values.database ?? env.PDS_JOBS_DATABASE_URL
    if (!database) throw new UsageError('missing --database URL (or PDS_JOBS_DATABASE_URL)')
    const pgQueue = await PgBossJobQueue.open({
      connectionString: database,
      name: values.queue ?? env.PDS_JOBS_QUEUE ?? 'pds-transfer',
    })
    queue = pgQueue
    switch (command) {
      case 'enqueue-backups': {
        const r = await enqueuePdsBackups(pgQueue, need(values.pds, '--pds'))
        io.out(
          `queued ${r.queued} backups of the ${r.accounts} accounts of ${values.pds}` +
            (r.alreadyPending ? `; ${r.alreadyPending} were already queued or running` : ''),
        )
        return 0
      }
      case 'enqueue-backup': {
        const one = need(did, 'a DID')
        const id = await enqueueBackup(pgQueue, one, (await resolver.resolve(one)).pds)
        io.out(id ? `queued ${id}: backup of ${one}` : `a backup of ${one} is already queued or running`)
        return 0
      }
      case 'worker': {
        const worker = await pgQueue.work(
          { backup: await backupHandler(values, resolver) },
          {
            concurrency: count(values.concurrency, 4),
            onSettled: report(io),
            onQueueError: (err) => io.err(`queue unreachable, trying again: ${(err as Error).message}\n`),
          },
        )
        io.out(`worker ${process.pid} running backup jobs`)
        const stop = deps.signal ?? processSignal()
        await new Promise<void>((resolve) =>
          stop.aborted ? resolve() : stop.addEventListener('abort', () => resolve()),
        )
        await worker.stop()
        return 0
      }
      case 'status': {
        const counts = await pgQueue.counts()
        io.out(
          `${(await pgQueue.isPaused()) ? 'PAUSED' : 'running'}; per source at once: ${await pgQueue.perSourceLimit()}\n` +
            Object.entries(counts)
              .map(([state, n]) => `${state.padEnd(10)} ${n}`)
              .join('\n'),
        )
        const failed = await pgQueue.list({ state: 'failed', limit: 20 })
        for (const job of failed) io.out(`FAILED ${describe(job)}`)
        if (counts.failed > 0) io.out('"pds-jobs retry-failed" queues them again')
        return 0
      }
      case 'list': {
        const state = values.state as JobRecord['state'] | undefined
        for (const job of await pgQueue.list({ ...(state && { state }), limit: count(values.limit, 100) }))
          io.out(describe(job))
        return 0
      }
      case 'pause':
        await pgQueue.pause()
        io.out('paused: no job starts until "pds-jobs resume"; running jobs finish')
        return 0
      case 'resume':
        await pgQueue.resume()
        io.out('resumed')
        return 0
      case 'retry-failed': {
        const r = await pgQueue.retryFailed()
        io.out(
          `queued ${r.retried} failed jobs again` +
            (r.superseded
              ? `; ${r.superseded} left failed: a newer job for the same account is queued or running`
              : ''),
        )
        return 0
      }
      case 'limit': {
        const limit = count(values['per-source'], 0)
        await pgQueue.setPerSource(limit)
        io.out(`at most ${limit} jobs of one source run at once, across all workers`)
        return 0
      }
    }
    throw new UsageError(`unknown command ${command}`)
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`${err.message}\n\n${USAGE}\n`)
      return 2
    }
    io.err(`error: ${(err as Error).message ?? String(err)}\n`)
    return 1
  } finally {
    await queue?.close()
  }
}

async function backupHandler(values: ReturnType<typeof parse>['values'], resolver: DidResolver) {
  return backupJobHandler({
    store: openArchiveStore(need(values.archive, '--archive')),
    keys: await readArchiveKeys(need(values.key, '--key')),
    resolver,
    workDir: values.work ?? tmpdir(),
  })
}

function report(io: CliIo) {
  return (job: { id: string; key: string }, error: unknown) => {
    if (error)
      io.err(`${job.key}: attempt failed, retried until its attempts run out: ${(error as Error).message}\n`)
    else io.out(`${job.key}: done`)
  }
}

function describe(job: JobRecord): string {
  const output = job.output as (Partial<BackupJobOutput> & { error?: string }) | null
  const detail = output?.error
    ? `: ${output.error}`
    : output?.rev
      ? `: rev ${output.rev}${output.unchanged ? ' (unchanged)' : ''}`
      : ''
  return `${job.id} ${job.state} ${job.kind} ${String(job.data.did ?? '')} from ${job.source}, attempts ${job.attempts}${detail}`
}

function processSignal(): AbortSignal {
  const controller = new AbortController()
  for (const name of ['SIGINT', 'SIGTERM'] as const) process.once(name, () => controller.abort())
  return controller.signal
}

function need(value: string | undefined, what: string): string {
  if (!value) throw new UsageError(`missing ${what}`)
  return value
}

function count(value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${value} is not a whole number, 1 or more`)
  return n
}

const COMMANDS = [
  'enqueue-backups',
  'enqueue-backup',
  'worker',
  'status',
  'list',
  'pause',
  'resume',
  'retry-failed',
  'limit',
  'backup-all',
  'help',
]

function parse(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      database: { type: 'string' },
      queue: { type: 'string' },
      pds: { type: 'string' },
      archive: { type: 'string' },
      key: { type: 'string' },
      plc: { type: 'string' },
      work: { type: 'string' },
      concurrency: { type: 'string' },
      state: { type: 'string' },
      limit: { type: 'string' },
      'per-source': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  const [command = 'help', did, ...rest] = positionals
  if (values.help) return { command: 'help', did: undefined, values }
  if (!COMMANDS.includes(command)) throw new Error(`unknown command ${command}`)
  if (rest.length > 0) throw new Error(`unexpected ${rest.join(' ')}`)
  if (did !== undefined && !did.startsWith('did:')) throw new Error(`${did} is not a DID (did:plc:…)`)
  if (
    values.state !== undefined &&
    !['queued', 'active', 'retry', 'completed', 'failed', 'cancelled'].includes(values.state)
  )
    throw new Error(`unknown state ${values.state}`)
  return { command, did, values }
}
