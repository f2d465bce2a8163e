/**
 * The pds-backup command line (bin: `src/cli.ts`), as a function so tests run it in-process.
 * Usage in the package README and `--help`.
 */
import { mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { parseArgs } from 'node:util'
import {
  AccountArchive,
  ArchiveError,
  generateArchiveKeys,
  readArchiveKeys,
  writeArchiveKeys,
  writerKeys,
} from '@pds-transfer/archive'
import { type DidResolver, PlcDidResolver, SourceError } from '@pds-transfer/destination'
import Fastify from 'fastify'
import { type BackupProgress, backupAccount } from './account-backup.ts'
import { appPasswordClient } from './app-password-session.ts'
import { openArchiveStore } from './archive-location.ts'
import { archiveStatus, formatStatus } from './archive-status.ts'
import { listPdsAccounts } from './pds-accounts.ts'
import { exportPlain } from './plain-export.ts'
import { backupReadApi } from './read-api.ts'
import { backupStatusPage } from './status-page.ts'

export const USAGE = `usage: pds-backup <command> [options]

commands
  keygen --out FILE [--writer FILE]
      a new archive key (X25519 encryption + P-256 manifest signing); --writer also writes the
      same key without its decryption part, for a backup service that must not read backups
  run DID --archive DIR --key FILE [--every HOURS]
      back up an account from its PDS (repo and blobs over the public sync endpoints, verified);
      again every HOURS hours with --every; with PDS_BACKUP_APP_PASSWORD set (an app password of
      the account, never its main password), its preferences too
  run --pds URL --all --archive DIR --key FILE
      back up every active account a PDS lists (com.atproto.sync.listRepos)
  status DID --archive DIR --key FILE      last backup, size, blobs, missing blobs, history
  verify DID --archive DIR --key FILE [--deep]
      check the archive at rest (signatures, every object's SHA-256); --deep also decrypts
      every object and checks blobs against their CIDs (needs the full key)
  export DID --archive DIR --key FILE --out DIR
      write the latest backup as plain files: repo.car, blobs/<cid>, prefs.json
  serve --archive DIR --key FILE [--port 2590] [--host 127.0.0.1] [--service-did DID]
        [--account DID ... --every HOURS]
      serve the archives over com.atproto.sync.getRepo, getBlob, listBlobs, getLatestCommit and
      getRepoStatus, to each account (a service-auth JWT for --service-did, default
      did:web:<host>%3A<port>) or to the operator (PDS_BACKUP_OPERATOR_TOKEN); with --account
      and --every, also back those accounts up every HOURS hours (the first run at once)

--archive is a directory, or s3://bucket[/prefix] (credentials and region from the AWS
environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; PDS_BACKUP_S3_ENDPOINT for
an S3-compatible server other than AWS)

options
  --plc URL       PLC directory (default https://plc.directory)
  --work DIR      temporary files (default: the system's temporary directory)

exit code: 0 on success, 1 when a backup or a check failed, 2 on bad usage`

/** Where the CLI writes: the terminal, or a test's buffers. */
export interface CliIo {
  out(text: string): void
  err(text: string): void
  /** True when `err` is a terminal (progress then rewrites one line). */
  tty?: boolean
}

class UsageError extends Error {}

/** Runs the CLI with `argv` (without node and script) and returns the exit code. */
export async function runBackupCli(
  argv: string[],
  io: CliIo,
  deps: {
    resolver?: DidResolver
    /** Ends `serve` (default: SIGINT or SIGTERM). */
    signal?: AbortSignal
    /** Told where `serve` listens, once it does. */
    onListening?: (url: string) => void
  } = {},
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
  try {
    if (command === 'keygen') {
      const keys = await generateArchiveKeys()
      await writeArchiveKeys(need(values.out, '--out'), keys)
      io.out(`wrote ${values.out}: keep it safe and private; without it the backups cannot be read`)
      if (values.writer) {
        await writeArchiveKeys(values.writer, writerKeys(keys))
        io.out(
          `wrote ${values.writer}: for the backup service; it can write and check backups, not read them`,
        )
      }
      return 0
    }
    const keys = await readArchiveKeys(need(values.key, '--key'))
    const workDir = values.work ?? tmpdir()
    await mkdir(workDir, { recursive: true })
    const store = openArchiveStore(need(values.archive, '--archive'), { spoolDir: workDir })
    const resolver = deps.resolver ?? new PlcDidResolver(values.plc ?? 'https://plc.directory')

    if (command === 'run') {
      const dids = values.all
        ? await listPdsAccounts(need(values.pds, '--pds'))
        : [need(did, 'a DID (or --pds URL --all)')]
      const every = values.every === undefined ? undefined : Number(values.every)
      if (every !== undefined && !(every > 0))
        throw new UsageError('--every takes a number of hours, e.g. --every 24')
      for (;;) {
        let failed = 0
        for (const one of dids) {
          if (!(await runOne(one, new AccountArchive(store, keys, one), resolver, workDir, io))) failed++
        }
        if (dids.length > 1) io.out(`${dids.length - failed} of ${dids.length} accounts backed up`)
        if (every === undefined) return failed > 0 ? 1 : 0
        io.out(`next run at ${new Date(Date.now() + every * 3_600_000).toISOString()}`)
        await new Promise((resolve) => setTimeout(resolve, every * 3_600_000))
      }
    }
    if (command === 'serve') {
      const port = Number(values.port ?? 2590)
      const host = values.host ?? '127.0.0.1'
      const serviceDid =
        values['service-did'] ?? `did:web:${host === '127.0.0.1' ? 'localhost' : host}%3A${port}`
      const app = Fastify({ logger: false })
      await app.register(backupReadApi, {
        store,
        keys,
        resolver,
        serviceDid,
        workDir,
        ...(process.env.PDS_BACKUP_OPERATOR_TOKEN && {
          operatorToken: process.env.PDS_BACKUP_OPERATOR_TOKEN,
        }),
      })
      const running = new Map<string, BackupProgress>()
      let nextRunAt: Date | undefined
      if (process.env.PDS_BACKUP_OPERATOR_TOKEN) {
        await app.register(backupStatusPage, {
          store,
          keys,
          resolver,
          operatorToken: process.env.PDS_BACKUP_OPERATOR_TOKEN,
          running: () => running,
          nextRunAt: () => nextRunAt,
        })
      }
      const url = await app.listen({ port, host })
      io.out(
        `serving the backups in ${values.archive} at ${url} (service DID ${serviceDid})` +
          (process.env.PDS_BACKUP_OPERATOR_TOKEN
            ? `; status page at ${url}/ (the operator token as password)`
            : ''),
      )
      deps.onListening?.(url)
      const stop = deps.signal ?? processSignal()
      const every = values.every === undefined ? undefined : Number(values.every)
      const accounts = values.account ?? []
      if (accounts.length > 0 && !(every !== undefined && every > 0))
        throw new UsageError('--account needs --every HOURS')
      let timer: NodeJS.Timeout | undefined
      const schedule = async () => {
        nextRunAt = undefined
        for (const one of accounts) {
          if (stop.aborted) return
          await runOne(one, new AccountArchive(store, keys, one), resolver, workDir, io, (p) =>
            running.set(one, p),
          )
          running.delete(one)
        }
        if (!stop.aborted && every) {
          nextRunAt = new Date(Date.now() + every * 3_600_000)
          io.out(`next backups at ${nextRunAt.toISOString()}`)
          timer = setTimeout(schedule, every * 3_600_000)
        }
      }
      const scheduled = accounts.length > 0 ? schedule() : Promise.resolve()
      await new Promise<void>((resolve) =>
        stop.aborted ? resolve() : stop.addEventListener('abort', () => resolve()),
      )
      clearTimeout(timer)
      await scheduled
      await app.close()
      return 0
    }
    const archive = new AccountArchive(store, keys, need(did, 'a DID'))
    if (command === 'status') {
      io.out(formatStatus(await archiveStatus(archive)))
      return 0
    }
    if (command === 'verify') {
      const report = await archive.verify({ deep: values.deep === true })
      for (const problem of report.problems) io.out(`PROBLEM ${problem}`)
      io.out(
        `${report.problems.length === 0 ? 'intact' : `${report.problems.length} problem(s)`}: ${report.manifests} manifests, ` +
          `${report.objects} objects, ${mib(report.bytes)} checked${report.deep ? ', decrypted and checked against their CIDs' : ' at rest'}`,
      )
      return report.problems.length === 0 ? 0 : 1
    }
    const result = await exportPlain(archive, need(values.out, '--out'), workDir)
    io.out(
      `exported ${did} at rev ${result.rev} to ${values.out}: repo.car (${result.records} records), ` +
        `${result.blobs} blobs${result.preferences ? ', prefs.json' : ''}`,
    )
    if (result.missingBlobs.length > 0)
      io.out(
        `${result.missingBlobs.length} blob(s) the repo references are not in the backup: ${result.missingBlobs.join(', ')}`,
      )
    return 0
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`${err.message}\n\n${USAGE}\n`)
      return 2
    }
    io.err(`error: ${explain(err)}\n`)
    return 1
  }
}

/** One account's run, reported; false when it failed (the others still run). */
async function runOne(
  did: string,
  archive: AccountArchive,
  resolver: DidResolver,
  workDir: string,
  io: CliIo,
  onProgress?: (progress: BackupProgress) => void,
): Promise<boolean> {
  const started = Date.now()
  const report = progress(io)
  try {
    const appPassword = process.env.PDS_BACKUP_APP_PASSWORD
    const authorized = appPassword
      ? await appPasswordClient((await resolver.resolve(did)).pds, did, appPassword)
      : undefined
    const result = await backupAccount(did, {
      archive,
      resolver,
      workDir,
      onProgress: (p) => {
        report(p)
        onProgress?.(p)
      },
      ...(authorized && { authorized }),
    })
    const { fetched, manifest } = result
    if (io.tty) io.err('\r\x1b[K')
    io.out(
      result.unchanged
        ? `${did}: unchanged since ${manifest.repo.rev}; checked in ${Date.now() - started} ms`
        : `${did}: rev ${manifest.repo.rev} (${manifest.repo.kind === 'diff' ? `diff since ${manifest.repo.since}` : 'whole repo'}, ` +
            `${manifest.repo.records} records), ${fetched.blobs} new blobs; fetched ${mib(fetched.repoBytes + fetched.blobBytes)}, ` +
            `stored ${mib(result.storedBytes)} in ${((Date.now() - started) / 1000).toFixed(1)} s` +
            (authorized ? ', preferences included' : ''),
    )
    if (result.missing.length > 0)
      io.out(
        `${did}: ${result.missing.length} blob(s) the PDS could not serve, recorded and asked for again next run: ` +
          result.missing.map((m) => `${m.cid} (${m.reason})`).join(', '),
      )
    return true
  } catch (err) {
    if (io.tty) io.err('\r\x1b[K')
    io.err(`${did}: backup failed, nothing of this run was kept: ${explain(err)}\n`)
    return false
  }
}

function progress(io: CliIo): (p: BackupProgress) => void {
  let lastLine = 0
  return (p) => {
    if (p.phase !== 'blobs') return
    const line = `blobs ${p.done}/${p.total} (${mib(p.bytes)})`
    if (io.tty) io.err(`\r\x1b[K${line}`)
    else if (Date.now() - lastLine > 5000 || p.done === p.total) {
      lastLine = Date.now()
      io.err(`${line}\n`)
    }
  }
}

/** An error as a sentence with what to do next. */
function explain(err: unknown): string {
  if (err instanceof ArchiveError) {
    const next: Record<string, string> = {
      InvalidKey: 'check --key: it must be a key file written by "pds-backup keygen" for this archive',
      ObjectMissing:
        'an object was deleted from the archive; run "pds-backup verify" to see what is affected',
      ObjectCorrupt: 'the archive was changed at rest; run "pds-backup verify" to see what is affected',
      ManifestInvalid: 'the archive was changed at rest or written with another key; run "pds-backup verify"',
      NoBackup: 'run "pds-backup run" for this account first',
      InvalidObjectKey: 'this name cannot be stored',
    }
    return `${err.message} (${next[err.reason]})`
  }
  if (err instanceof SourceError) {
    if (/RepoNotFound|RepoDeactivated|RepoTakendown|RepoSuspended/.test(err.error))
      return `${err.message}: the PDS does not serve this account now; earlier backups are unchanged`
    return `${err.message}: the PDS refused; try again later`
  }
  return (err as Error).message ?? String(err)
}

function processSignal(): AbortSignal {
  const controller = new AbortController()
  for (const name of ['SIGINT', 'SIGTERM'] as const) process.once(name, () => controller.abort())
  return controller.signal
}

function mib(bytes: number): string {
  return bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${(bytes / 1048576).toFixed(1)} MiB`
}

function need(value: string | undefined, what: string): string {
  if (!value) throw new UsageError(`missing ${what}`)
  return value
}

function parse(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      out: { type: 'string' },
      writer: { type: 'string' },
      archive: { type: 'string' },
      key: { type: 'string' },
      plc: { type: 'string' },
      pds: { type: 'string' },
      all: { type: 'boolean' },
      every: { type: 'string' },
      deep: { type: 'boolean' },
      work: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      'service-did': { type: 'string' },
      account: { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h' },
    },
  })
  const [command = 'help', did, ...rest] = positionals
  if (values.help) return { command: 'help', did: undefined, values }
  if (!['keygen', 'run', 'status', 'verify', 'export', 'serve', 'help'].includes(command))
    throw new Error(`unknown command ${command}`)
  if (rest.length > 0) throw new Error(`unexpected ${rest.join(' ')}`)
  if (did !== undefined && !did.startsWith('did:')) throw new Error(`${did} is not a DID (did:plc:…)`)
  return { command, did, values }
}
