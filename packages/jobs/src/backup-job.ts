/**
 * The backup job: one `backupAccount` run of one account, as a job any worker can take. Its
 * progress is the blobs it has stored so far; an attempt after a dead one keeps those (checked
 * in the store), adopts the ones stored but not yet recorded when it died (opened and checked
 * against their CIDs), and fetches only the rest, so no blob is stored twice. The repo itself is
 * one unit, fetched and verified again by the next attempt.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { AccountArchive, type ArchiveKeys, type ArchiveStore, type BlobEntry } from '@pds-transfer/archive'
import { backupAccount, listPdsAccounts } from '@pds-transfer/backup'
import type { DidResolver } from '@pds-transfer/destination'
import type { JobHandler, JobQueue } from './job-queue.ts'
import { SerialSaver } from './serial-saver.ts'

export interface BackupJobData {
  did: string
}

/** What a completed backup job records. */
export interface BackupJobOutput {
  rev: string
  seq: number
  unchanged: boolean
  blobsFetched: number
  blobsReused: number
  missingBlobs: number
}

export interface BackupJobDeps {
  store: ArchiveStore
  keys: ArchiveKeys
  resolver: DidResolver
  /** Temporary files go under here (one directory per attempt, removed after it). */
  workDir: string
  /** How the PDSes are reached (default: the global fetch). */
  fetch?: typeof fetch
}

/** Queues a backup of `did`, read from `pds`; null when one is already queued or running. */
export function enqueueBackup(queue: JobQueue, did: string, pds: string): Promise<string | null> {
  return queue.enqueue({ kind: 'backup', data: { did }, source: sourceOf(pds), key: `backup:${did}` })
}

/**
 * Queues a backup of every active account `pds` lists (`com.atproto.sync.listRepos`); how many
 * were queued and how many were already waiting or running.
 */
export async function enqueuePdsBackups(
  queue: JobQueue,
  pds: string,
  fetchImpl: typeof fetch = fetch,
): Promise<{ queued: number; alreadyPending: number; accounts: number }> {
  const dids = await listPdsAccounts(pds, fetchImpl)
  let queued = 0
  for (const did of dids) if (await enqueueBackup(queue, did, pds)) queued++
  return { queued, alreadyPending: dids.length - queued, accounts: dids.length }
}

/** The handler workers run for `backup` jobs. */
export function backupJobHandler(deps: BackupJobDeps): JobHandler {
  return async (data, context) => {
    const did = typeof data.did === 'string' ? data.did : ''
    if (!did.startsWith('did:')) throw new Error(`a backup job needs a DID, not ${JSON.stringify(data.did)}`)
    const saved = (context.progress as { blobs?: BlobEntry[] } | undefined)?.blobs ?? []
    const blobs = new Map(saved.map((b) => [b.cid, b]))
    const saver = new SerialSaver(() => context.saveProgress({ blobs: [...blobs.values()] }))
    await mkdir(deps.workDir, { recursive: true })
    const workDir = await mkdtemp(join(deps.workDir, 'backup-job-'))
    try {
      const result = await backupAccount(did, {
        archive: new AccountArchive(deps.store, deps.keys, did),
        resolver: deps.resolver,
        workDir,
        resumedBlobs: saved,
        // A killed attempt may have stored a blob it did not get to record.
        adoptStoredBlobs: context.attempt > 1,
        onBlobStored: (entry) => {
          blobs.set(entry.cid, entry)
          saver.request()
        },
        ...(deps.fetch && { fetch: deps.fetch }),
      })
      await saver.flush()
      const output: BackupJobOutput = {
        rev: result.manifest.repo.rev,
        seq: result.manifest.seq,
        unchanged: result.unchanged,
        blobsFetched: result.fetched.blobs,
        blobsReused: result.reusedBlobs,
        missingBlobs: result.missing.length,
      }
      return output
    } finally {
      await saver.flush()
      await rm(workDir, { recursive: true, force: true })
    }
  }
}

/** The key the per-source limit counts by: the PDS's origin. */
export function sourceOf(pds: string): string {
  return new URL(pds).origin
}
