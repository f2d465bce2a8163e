/**
 * One backup run of one account, from any PDS. Invariant: the run becomes part of the archive
 * only when its manifest is appended, after every object it names has been verified and
 * stored; a run that fails midway changes nothing a reader sees (it may leave strays, which
 * the next run overwrites). Public data (repo, blobs) needs no sign-in; preferences only come
 * with an authorized client.
 */
import type { AccountArchive, BackupManifest, BlobEntry, MissingBlob } from '@pds-transfer/archive'
import {
  DEFAULT_LIMITS,
  type DidResolver,
  readAccountEmail,
  readPreferences,
  type SourceClient,
  SourceError,
} from '@pds-transfer/destination'
import { backupBlobs } from './blob-backup.ts'
import { backupRepo } from './repo-backup.ts'
import { adoptStoredBlobs, reusableBlobs } from './resumed-blobs.ts'

/** Where a run is, for a progress line. */
export type BackupProgress =
  | { phase: 'head'; pds: string }
  | { phase: 'repo'; since: string | undefined }
  | { phase: 'blobs'; done: number; total: number; bytes: number }

export interface BackupOptions {
  archive: AccountArchive
  resolver: DidResolver
  /** A directory for temporary block files (deleted after the run). */
  workDir: string
  /**
   * The account's own authorized client at its PDS, for what is not public: the preferences and
   * the email (`getSession`). An OAuth session with the scope
   * `atproto rpc:app.bsky.actor.getPreferences?aud=* account:email` (read-only), or
   * `appPasswordClient`. Without it the run backs up what is public and keeps what earlier runs
   * had of the rest.
   */
  authorized?: SourceClient
  onProgress?: (progress: BackupProgress) => void
  /**
   * Blobs an earlier attempt of this run stored before it was cut short (as `onBlobStored` told
   * them): each one the run wants is kept as it is in the store, not fetched or stored again.
   */
  resumedBlobs?: readonly BlobEntry[]
  /**
   * Also keep the blobs an earlier attempt stored but did not get to record (it was killed right
   * after a put): each wanted blob's object already in the store is opened and checked against its
   * CID instead of being fetched. Needs the full key; costs one existence check per wanted blob.
   */
  adoptStoredBlobs?: boolean
  /** Told of each blob once it is stored, for a job to save as its progress. */
  onBlobStored?: (entry: BlobEntry) => void
  /** How the PDS is reached (default: the global fetch); for a proxy, or to count requests. */
  fetch?: typeof fetch
  now?: () => Date
}

export interface BackupResult {
  manifest: BackupManifest
  /** True when the head had not moved since the last run (no repo fetched). */
  unchanged: boolean
  fetched: { repoBytes: number; blobs: number; blobBytes: number }
  /** Stored (sealed) bytes this run added to the archive. */
  storedBytes: number
  /** Blobs an earlier attempt had stored, kept without fetching them again (`resumedBlobs`). */
  reusedBlobs: number
  missing: MissingBlob[]
}

/** A client for the public sync endpoints of a PDS (no credentials). */
export function publicClient(pds: string, fetchImpl: typeof fetch = fetch): SourceClient {
  const url = pds.replace(/\/+$/, '')
  return { url, fetch: (path, init) => fetchImpl(`${url}${path}`, init) }
}

/** Backs up `did` into `options.archive`; throws `SourceError` when its PDS does not serve it. */
export async function backupAccount(did: string, options: BackupOptions): Promise<BackupResult> {
  const { archive } = options
  if (archive.did !== did) throw new Error(`the archive is ${archive.did}'s, not ${did}'s`)
  const identity = await options.resolver.resolve(did)
  const client = publicClient(identity.pds, options.fetch)
  options.onProgress?.({ phase: 'head', pds: client.url })
  const head = await latestCommit(client, did)
  const state = await archive.load()
  const unchanged = state.latest?.repo.rev === head.rev
  let storedBytes = 0

  let repo = state.latest?.repo
  let repoBytes = 0
  let wanted: string[]
  if (unchanged && state.latest) {
    // Nothing new can be referenced; only the blobs missing last time are asked for again.
    wanted = state.latest.missingBlobs.map((m) => m.cid)
  } else {
    options.onProgress?.({ phase: 'repo', since: state.latest?.repo.rev })
    const fetched = await backupRepo({
      archive,
      state,
      client,
      did,
      signingKey: identity.signingKey,
      workDir: options.workDir,
    })
    repo = fetched.entry
    repoBytes = fetched.fetchedBytes
    storedBytes += fetched.entry.object.size
    wanted = [...fetched.blobCids].filter((cid) => !state.blobs.has(cid)).sort()
  }
  if (!repo) throw new Error('unreachable: a run without a repo')

  // Before the blobs, which may take long: an access token read now is still valid.
  let preferences = state.latest?.preferences ?? null
  let accountState = state.latest?.accountState ?? null
  if (options.authorized) {
    const prefs = await readPreferences(options.authorized, DEFAULT_LIMITS.stallTimeoutMs)
    preferences = await archive.writePreferences(state.manifests.length, prefs)
    storedBytes += preferences.size
    const shared = await readAccountEmail(options.authorized, DEFAULT_LIMITS.stallTimeoutMs)
    if (shared.email !== undefined) {
      accountState = await archive.writeAccountState(state.manifests.length, shared)
      storedBytes += accountState.size
    }
  }

  const recorded = await reusableBlobs(archive, options.resumedBlobs ?? [], new Set(wanted))
  const unrecorded = wanted.filter((cid) => !recorded.some((b) => b.cid === cid))
  const reused = [
    ...recorded,
    ...(options.adoptStoredBlobs ? await adoptStoredBlobs(archive, unrecorded) : []),
  ]
  const reusedCids = new Set(reused.map((b) => b.cid))
  const blobs = await backupBlobs({
    archive,
    client,
    did,
    cids: wanted.filter((cid) => !reusedCids.has(cid)),
    onBlob: (done, total, bytes) => options.onProgress?.({ phase: 'blobs', done, total, bytes }),
    ...(options.onBlobStored && { onStored: options.onBlobStored }),
  })
  storedBytes += blobs.stored.reduce((n, b) => n + b.object.size, 0)
  const runBlobs = [...reused, ...blobs.stored].sort((a, b) => (a.cid < b.cid ? -1 : a.cid > b.cid ? 1 : 0))

  const manifest = await archive.appendManifest(state, {
    createdAt: (options.now?.() ?? new Date()).toISOString(),
    source: client.url,
    repo,
    blobs: runBlobs,
    blobCount: state.blobs.size + runBlobs.length,
    missingBlobs: blobs.missing,
    preferences,
    accountState,
  })
  return {
    manifest,
    unchanged,
    fetched: { repoBytes, blobs: blobs.stored.length, blobBytes: blobs.fetchedBytes },
    storedBytes,
    reusedBlobs: reused.length,
    missing: blobs.missing,
  }
}

async function latestCommit(client: SourceClient, did: string): Promise<{ cid: string; rev: string }> {
  const res = await client.fetch(`/xrpc/com.atproto.sync.getLatestCommit?did=${encodeURIComponent(did)}`, {
    signal: AbortSignal.timeout(DEFAULT_LIMITS.stallTimeoutMs),
  })
  if (!res.ok) throw await SourceError.from(res, 'getLatestCommit')
  const body = (await res.json().catch(() => ({}))) as { cid?: unknown; rev?: unknown }
  if (typeof body.cid !== 'string' || typeof body.rev !== 'string')
    throw new SourceError(502, 'InvalidResponse', 'getLatestCommit: no cid and rev')
  return { cid: body.cid, rev: body.rev }
}
