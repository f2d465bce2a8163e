/**
 * A job worker in its own process, for the drills that SIGKILL one mid-job: `pds-jobs worker`'s
 * parts (a `PgBossJobQueue` worker running `backupJobHandler` on a shared filesystem archive)
 * with two instruments: every completed object put is appended to PUT_LOG as `<pid> <key> new`,
 * or `overwrite` when the key already held an object (a second store of it), and each getBlob is held
 * BLOB_DELAY_MS before it is sent, so that jobs are long enough to overlap and to be killed in.
 * Configured by environment: DATABASE_URL, QUEUE_NAME, ARCHIVE_DIR, KEY_FILE, PLC_URL, WORK_DIR,
 * PUT_LOG, BLOB_DELAY_MS, CONCURRENCY. Sends `{ ready: true, pid }` once working; exits when the
 * test process is gone.
 */
import { appendFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { FsArchiveStore, readArchiveKeys, type StoredObject } from '@pds-transfer/archive'
import { PlcDidResolver } from '@pds-transfer/destination'
import { backupJobHandler, PgBossJobQueue } from '@pds-transfer/jobs'
import { exitWithParent } from './child-peer.ts'

const env = (name: string): string => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is required`)
  return value
}

exitWithParent()

class LoggedStore extends FsArchiveStore {
  override async put(
    key: string,
    bytes: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  ): Promise<StoredObject> {
    // One job per account runs at a time, so nothing else puts this key meanwhile.
    const existed = await this.has(key)
    const stored = await super.put(key, bytes)
    appendFileSync(env('PUT_LOG'), `${process.pid} ${key} ${existed ? 'overwrite' : 'new'}\n`)
    return stored
  }
}

const delay = Number(process.env.BLOB_DELAY_MS ?? 0)
const slowBlobs: typeof fetch = async (input, init) => {
  if (String(input).includes('/xrpc/com.atproto.sync.getBlob')) await sleep(delay)
  return fetch(input, init)
}

const queue = await PgBossJobQueue.open({
  connectionString: env('DATABASE_URL'),
  name: env('QUEUE_NAME'),
  pollMs: 200,
})
await queue.work(
  {
    backup: backupJobHandler({
      store: new LoggedStore(env('ARCHIVE_DIR')),
      keys: await readArchiveKeys(env('KEY_FILE')),
      resolver: new PlcDidResolver(env('PLC_URL')),
      workDir: env('WORK_DIR'),
      fetch: slowBlobs,
    }),
  },
  { concurrency: Number(process.env.CONCURRENCY ?? 3) },
)
process.send?.({ ready: true, pid: process.pid })
