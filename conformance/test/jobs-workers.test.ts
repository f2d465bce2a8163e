import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { CarReader } from '@ipld/car'
import {
  AccountArchive,
  type ArchiveKeys,
  FsArchiveStore,
  generateArchiveKeys,
  OBJECT_TYPE,
  writeArchiveKeys,
} from '@pds-transfer/archive'
import { type BackupJobOutput, PgBossJobQueue, runJobsCli } from '@pds-transfer/jobs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { ChildPeer } from '../src/harness/child-peer.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { startPostgres } from '../src/harness/postgres.ts'

/** Accounts per PDS (two PDSes), each with a few posts and two small images. */
const ACCOUNTS_PER_PDS = 30
const WORKERS = 3

/**
 * What one PDS sees: the most accounts it was read for at once (requests in flight naming
 * distinct DIDs), while `counting` is on.
 */
function watchReads(server: { prependListener(event: 'request', fn: (...args: never[]) => void): unknown }) {
  const inFlight = new Map<string, number>()
  const seen = { max: 0, counting: false }
  server.prependListener('request', ((req: IncomingMessage, res: ServerResponse) => {
    const did = new URL(req.url ?? '/', 'http://x').searchParams.get('did')
    if (!seen.counting || !did || !req.url?.startsWith('/xrpc/com.atproto.sync.')) return
    inFlight.set(did, (inFlight.get(did) ?? 0) + 1)
    res.setMaxListeners(res.getMaxListeners() + 1)
    seen.max = Math.max(seen.max, inFlight.size)
    res.once('close', () => {
      const n = (inFlight.get(did) ?? 1) - 1
      if (n === 0) inFlight.delete(did)
      else inFlight.set(did, n)
    })
  }) as never)
  return seen
}

/** A CAR's roots and blocks (CID to bytes as hex). */
async function carBlocks(car: Uint8Array): Promise<{ roots: string[]; blocks: Map<string, string> }> {
  const reader = await CarReader.fromBytes(car)
  const blocks = new Map<string, string>()
  for await (const block of reader.blocks())
    blocks.set(block.cid.toString(), Buffer.from(block.bytes).toString('hex'))
  return { roots: (await reader.getRoots()).map(String), blocks }
}

async function bytesOf(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const chunk of chunks) parts.push(chunk)
  return Buffer.concat(parts)
}

/**
 * Issue 23's proof: 3 worker processes share one PostgreSQL queue and one archive store and back
 * up every account of two plain reference PDSes, enqueued by the operator's command. Mid-run one
 * worker is SIGKILLed while it stores an account's blobs (that job completes on another worker,
 * keeping the blobs already stored: no blob object is put twice) and the PostgreSQL server is
 * restarted (no job lost, none failed; a job run again after its manifest only adds an unchanged one). Each PDS is never read for more than
 * 2 accounts at once, counted by the PDS itself, though the workers have 9 slots between them.
 */
describe('backups as jobs on a shared queue, 3 worker processes', () => {
  let plc: PlcDirectory
  const pdses: Awaited<ReturnType<typeof startPlainPds>>[] = []
  const watches: { max: number; counting: boolean }[] = []
  let pg: Awaited<ReturnType<typeof startPostgres>>
  let work: string
  let keys: ArchiveKeys
  const accounts: SeededAccount[] = []
  let victim: SeededAccount
  const workers: ChildPeer<{ pid: number }>[] = []

  beforeAll(async () => {
    ;[plc, pg, work, keys] = await Promise.all([
      startPlcDirectory(),
      startPostgres(),
      mkdtemp(join(tmpdir(), 'jobs-workers-')),
      generateArchiveKeys(),
    ])
    for (let p = 0; p < 2; p++) {
      const pds = await startPlainPds(plc.namedUrl)
      pdses.push(pds)
      watches.push(watchReads(pds.pds.server as never))
      for (let i = 0; i < ACCOUNTS_PER_PDS; i += 5) {
        const batch = await Promise.all(
          Array.from({ length: Math.min(5, ACCOUNTS_PER_PDS - i) }, (_, j) =>
            seedReferenceAccount(pds.url, {
              handle: `u${p}-${i + j}.test`,
              email: `u${p}-${i + j}@example.com`,
              password: 'job-password',
              posts: 3,
              // The first account of the first PDS is the one whose worker is killed: more blobs.
              images: p === 0 && i + j === 0 ? 8 : 2,
              imageSide: 48,
              follows: 0,
            }),
          ),
        )
        accounts.push(...batch)
      }
    }
    victim = accounts[0] as SeededAccount
    await writeArchiveKeys(join(work, 'key.json'), keys)
    await writeFile(join(work, 'puts.log'), '')
  }, 300_000)

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.kill()))
    for (const pds of pdses) await pds.close()
    await plc?.close()
    await pg?.destroy()
    if (work) await rm(work, { recursive: true, force: true })
  })

  it('backs up every account, through a killed worker and a restarted queue server', async () => {
    const queueName = 'drill'
    // The first to open the queue sets its limits: 2 per source, a dead worker found within ~12 s.
    const queue = await PgBossJobQueue.open({
      connectionString: pg.url,
      name: queueName,
      perSource: 2,
      heartbeatSeconds: 10,
      superviseIntervalSeconds: 2,
      retryDelaySeconds: 1,
    })
    const io = {
      lines: [] as string[],
      out: (t: string) => io.lines.push(t),
      err: (t: string) => io.lines.push(t),
    }
    const envDb = { PDS_JOBS_DATABASE_URL: pg.url, PDS_JOBS_QUEUE: queueName }

    // Paused while the operator queues both PDSes, so the drill starts from a full queue.
    await queue.pause()
    for (const pds of pdses) {
      expect(await runJobsCli(['enqueue-backups', '--pds', pds.url], io, { env: envDb })).toBe(0)
    }
    expect(
      io.lines.filter((l) =>
        l.startsWith(`queued ${ACCOUNTS_PER_PDS} backups of the ${ACCOUNTS_PER_PDS} accounts`),
      ),
    ).toHaveLength(2)
    // Again: every account already has its backup waiting.
    expect(await runJobsCli(['enqueue-backups', '--pds', pdses[0]!.url], io, { env: envDb })).toBe(0)
    expect(io.lines.at(-1)).toMatch(
      new RegExp(`queued 0 .*; ${ACCOUNTS_PER_PDS} were already queued or running`),
    )
    expect((await queue.counts()).queued).toBe(2 * ACCOUNTS_PER_PDS)

    for (let w = 0; w < WORKERS; w++)
      workers.push(
        ChildPeer.fork(new URL('../src/harness/jobs-worker.ts', import.meta.url).pathname, {
          DATABASE_URL: pg.url,
          QUEUE_NAME: queueName,
          ARCHIVE_DIR: join(work, 'archive'),
          KEY_FILE: join(work, 'key.json'),
          PLC_URL: plc.url,
          WORK_DIR: join(work, `tmp-${w}`),
          PUT_LOG: join(work, 'puts.log'),
          BLOB_DELAY_MS: '300',
          CONCURRENCY: '3',
        }),
      )
    const pids = await Promise.all(workers.map((w) => w.ready.then((r) => r.pid)))
    for (const watch of watches) watch.counting = true
    await queue.resume()

    // Kill the worker that stores the victim's first blob, before it can store the rest.
    const victimBlobs = `${victim.did}/blobs/`
    let killed: number | undefined
    for (const end = Date.now() + 120_000; killed === undefined && Date.now() < end; await sleep(10)) {
      const line = (await readFile(join(work, 'puts.log'), 'utf8'))
        .split('\n')
        .find((l) => l.includes(victimBlobs))
      if (line) killed = Number(line.split(' ')[0])
    }
    expect(killed).toBeDefined()
    await workers[pids.indexOf(killed as number)]?.kill()
    const putsAtKill = (await readFile(join(work, 'puts.log'), 'utf8')).split('\n')
    const victimPutsBeforeKill = putsAtKill.filter((l) => l.includes(victimBlobs)).length
    expect(victimPutsBeforeKill).toBeLessThan(8)

    // Restart the queue's server once a third of the jobs are done.
    const total = 2 * ACCOUNTS_PER_PDS
    for (const end = Date.now() + 120_000; (await queue.counts()).completed < total / 3; await sleep(100))
      if (Date.now() > end) throw new Error('a third of the jobs did not complete')
    const doneBeforeRestart = (await queue.counts()).completed
    await pg.restart(1000)

    for (const end = Date.now() + 180_000; ; await sleep(250)) {
      const counts = await queue.counts().catch(() => undefined)
      if (counts && counts.completed === total) break
      if (Date.now() > end) throw new Error(`not all jobs completed: ${JSON.stringify(counts)}`)
    }
    for (const watch of watches) watch.counting = false
    const counts = await queue.counts()
    expect(counts).toMatchObject({ completed: total, failed: 0, active: 0, queued: 0, retry: 0 })
    expect(doneBeforeRestart).toBeLessThan(total)

    // The victim's job ran again elsewhere and kept what the killed worker had stored.
    const jobs = await queue.list({ state: 'completed' })
    const victimJob = jobs.find((j) => j.data.did === victim.did)
    expect(victimJob?.attempts).toBeGreaterThanOrEqual(2)
    const victimOutput = victimJob?.output as BackupJobOutput
    expect(victimOutput.blobsReused).toBeGreaterThanOrEqual(1)
    expect(victimOutput.blobsReused + victimOutput.blobsFetched).toBe(8)

    // No blob object was put twice, over the whole run and all workers: a put onto an object
    // already stored is logged as an overwrite (a log line of a put completed just before the
    // kill may be missing; the overwrite that would follow it is not).
    const puts = (await readFile(join(work, 'puts.log'), 'utf8')).split('\n').filter(Boolean)
    const blobPuts = puts.filter((l) => l.includes('/blobs/'))
    expect(blobPuts.length).toBeGreaterThanOrEqual(accounts.reduce((n, a) => n + a.blobs.size, 0) - 1)
    expect(
      blobPuts.filter((l) => l.endsWith(' overwrite')),
      `killed ${killed}`,
    ).toEqual([])

    // Each PDS saw at most 2 accounts read at once.
    expect(watches.map((w) => w.max)).toEqual([2, 2])

    // Every archive: one run (no job ran twice), intact, and byte-identical to what the PDS serves.
    const store = new FsArchiveStore(join(work, 'archive'))
    const reruns: string[] = []
    for (const account of accounts) {
      const archive = new AccountArchive(store, keys, account.did)
      const state = await archive.load()
      // At least once, effects once: a job run again after its manifest was stored (its
      // completion lost, or its heartbeat missed while the server restarted) adds an "unchanged"
      // manifest: the same head, no blob stored again.
      const [first, ...again] = state.manifests
      expect(first?.blobs).toHaveLength(account.blobs.size)
      for (const m of again)
        expect({ rev: m.repo.rev, blobs: m.blobs.length }).toEqual({ rev: first?.repo.rev, blobs: 0 })
      if (again.length > 0) reruns.push(`${account.did} +${again.length}`)
      expect((await archive.verify({ deep: true })).problems).toEqual([])
      for (const [cid, bytes] of account.blobs) {
        const entry = state.blobs.get(cid)
        expect(entry, `${account.did} ${cid}`).toBeDefined()
        expect(Buffer.compare(await bytesOf(archive.read(entry!.object, OBJECT_TYPE.blob)), bytes)).toBe(0)
      }
    }
    const victimArchive = new AccountArchive(store, keys, victim.did)
    const latest = (await victimArchive.load()).latest!
    const pdsCar = Buffer.from(
      await (await fetch(`${pdses[0]!.url}/xrpc/com.atproto.sync.getRepo?did=${victim.did}`)).arrayBuffer(),
    )
    // The same blocks, byte for byte (the archive writes them in its own order).
    const ours = await carBlocks(await bytesOf(victimArchive.read(latest.repo.object, OBJECT_TYPE.repo)))
    const theirs = await carBlocks(pdsCar)
    expect(ours.roots).toEqual(theirs.roots)
    expect(ours.blocks.size).toBeGreaterThan(10)
    expect(ours.blocks).toEqual(theirs.blocks)

    const retried = jobs.filter((j) => j.attempts > 1).map((j) => `${j.data.did} x${j.attempts}`)
    console.log(
      `jobs drill: ${total} accounts, ${blobPuts.length} blob puts, ${puts.length} puts; killed worker ${killed} ` +
        `after ${victimPutsBeforeKill} of the victim's 8 blobs; victim ${JSON.stringify(victimOutput)}; ` +
        `retried ${retried.join(', ')}; ${doneBeforeRestart} done before the PostgreSQL restart; ` +
        `most accounts read at once per PDS: ${watches.map((w) => w.max).join(', ')}; ` +
        `run again after their manifest: ${reruns.join(', ') || 'none'}`,
    )

    // The operator's view.
    io.lines.length = 0
    expect(await runJobsCli(['status'], io, { env: envDb })).toBe(0)
    expect(io.lines.join('\n')).toMatch(/running; per source at once: 2/)
    await queue.close()
  }, 420_000)

  it('backs up every account of a PDS in one process without a database (backup-all)', async () => {
    const lines: string[] = []
    const io = { out: (t: string) => lines.push(t), err: (t: string) => lines.push(t) }
    const archive = join(work, 'in-process')
    const argv = ['backup-all', '--pds', pdses[1]!.url, '--archive', archive, '--key', join(work, 'key.json')]
    expect(await runJobsCli([...argv, '--plc', plc.url], io, { env: {} })).toBe(0)
    expect(lines).toContain(`${ACCOUNTS_PER_PDS} accounts to back up`)
    expect(lines.at(-1)).toBe(`${ACCOUNTS_PER_PDS} of ${ACCOUNTS_PER_PDS} accounts backed up, 0 failed`)
    const store = new FsArchiveStore(archive)
    for (const account of accounts.slice(ACCOUNTS_PER_PDS)) {
      const state = await new AccountArchive(store, keys, account.did).load()
      expect([...state.blobs.keys()].sort()).toEqual([...account.blobs.keys()].sort())
    }
  }, 120_000)
})
