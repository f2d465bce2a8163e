/**
 * The repo step of a backup run. Invariant: a repo object is written only after the whole repo
 * it stands for has verified (the commit signed with the DID's key, the MST and every record,
 * the full verifier of a move); a diff is verified over the blocks the archive already holds.
 * Nothing the source sent unverified reaches the archive.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { AccountArchive, ArchiveState, RepoEntry } from '@pds-transfer/archive'
import {
  DEFAULT_LIMITS,
  fetchStreaming,
  InvalidRepoError,
  type RepoStaging,
  RepoStagingFile,
  type SourceClient,
  type VerifiedBlock,
  type VerifiedRepo,
  verifiedCarBatches,
  verifyStagedRepo,
  withRetries,
} from '@pds-transfer/destination'
import { carBytes } from './car-bytes.ts'
import { loadChain, repoChain } from './repo-chain.ts'

/** A run fetches the whole repo again once its diffs reach this many, or half the full CAR's size. */
export const MAX_DIFFS = 30

export interface RepoBackup {
  entry: RepoEntry
  /** Blob CIDs the verified repo references. */
  blobCids: Set<string>
  /** Bytes of the CAR fetched from the PDS. */
  fetchedBytes: number
}

/** The rev the next fetch may be a diff over, or undefined when it must be whole. */
export function diffBase(
  archive: AccountArchive,
  state: ArchiveState,
): { since: string; chain: RepoEntry[] } | undefined {
  // Verifying a diff needs the held blocks, so the key that opens them.
  if (!state.latest || !archive.keys.encryption.d) return undefined
  const chain = repoChain(state)
  const [full, ...diffs] = chain
  if (!full) return undefined
  const diffBytes = diffs.reduce((n, d) => n + d.object.plainSize, 0)
  if (diffs.length >= MAX_DIFFS || diffBytes * 2 > full.object.plainSize) return undefined
  return { since: state.latest.repo.rev, chain }
}

/** Fetches, verifies and stores the repo of `did` (a diff when `diffBase` allows one). */
export async function backupRepo(params: {
  archive: AccountArchive
  state: ArchiveState
  client: SourceClient
  did: string
  signingKey: string
  workDir: string
}): Promise<RepoBackup> {
  const base = diffBase(params.archive, params.state)
  const dir = await mkdtemp(join(params.workDir, 'repo-'))
  try {
    const held = base && (await loadChain(params.archive, base.chain, dir, 'held'))
    try {
      if (held) {
        const diff = await fetchVerified(params, dir, { since: base.since, held })
        if (diff) return diff
      }
      // First run, a key that cannot read the held repo, time to compact, or a diff that did not cover the change.
      return (await fetchVerified(params, dir, {})) as RepoBackup
    } finally {
      await held?.discard()
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/**
 * One verified fetch; undefined when a diff reached blocks that neither it nor the archive holds
 * (the source's `since` did not cover the change: fetch it whole).
 */
async function fetchVerified(
  params: Parameters<typeof backupRepo>[0],
  dir: string,
  diff: { since?: string; held?: RepoStagingFile },
): Promise<RepoBackup | undefined> {
  const { client, did } = params
  const query = new URLSearchParams({ did, ...(diff.since && { since: diff.since }) })
  let attempt = 0
  return withRetries(DEFAULT_LIMITS.retry, async () => {
    const staged = new RepoStagingFile(join(dir, `fetch-${attempt++}.sqlite`))
    try {
      let root: { bytes: Uint8Array; toString(): string } | undefined
      let fetchedBytes = 0
      await fetchStreaming(
        (signal) => client.fetch(`/xrpc/com.atproto.sync.getRepo?${query}`, { signal }),
        'getRepo',
        DEFAULT_LIMITS.stallTimeoutMs,
        async (_res, body) => {
          const counted = (async function* () {
            for await (const chunk of body) {
              fetchedBytes += chunk.length
              yield chunk
            }
          })()
          for await (const batch of verifiedCarBatches(counted, { onRoot: (r) => (root = r) }))
            await staged.put(batch)
        },
      )
      if (!root) throw new InvalidRepoError('the repo CAR has no root')
      const overlay = new HeldOverlay(staged, diff.held)
      let repo: VerifiedRepo
      try {
        repo = await verifyStagedRepo({ staging: overlay, root, did, signingKey: params.signingKey })
      } catch (err) {
        if (err instanceof InvalidRepoError && overlay.missing > 0) return undefined
        throw err
      }
      const object = await params.archive.writeRepo(repo.rev, carBytes(root.bytes, staged.batches(512)))
      const entry: RepoEntry = {
        rev: repo.rev,
        commitCid: repo.commitCid,
        records: repo.records,
        signingKey: params.signingKey,
        kind: diff.since ? 'diff' : 'full',
        since: diff.since ?? null,
        object,
      }
      return { entry, blobCids: repo.blobCids, fetchedBytes }
    } finally {
      await staged.discard()
    }
  })
}

/** What the verifier reads: the fetched blocks, then the archive's held ones (never copied). */
class HeldOverlay implements RepoStaging {
  missing = 0
  constructor(
    private readonly fetched: RepoStaging,
    private readonly held: RepoStaging | undefined,
  ) {}

  put(blocks: VerifiedBlock[]): Promise<void> {
    return this.fetched.put(blocks)
  }

  async get(cid: Uint8Array): Promise<Uint8Array | undefined> {
    const bytes = (await this.fetched.get(cid)) ?? (await this.held?.get(cid))
    if (!bytes) this.missing++
    return bytes
  }

  async discard(): Promise<void> {}
}
