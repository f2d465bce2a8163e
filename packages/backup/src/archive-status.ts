import type { AccountArchive } from '@pds-transfer/archive'

/** What a person wants to know about an account's backups. */
export interface ArchiveStatus {
  did: string
  runs: number
  last?: { at: string; rev: string; records: number; source: string }
  blobs: number
  /** Stored bytes of every object the manifests name. */
  storedBytes: number
  missingBlobs: { cid: string; reason: string }[]
  preferences: boolean
  /** Whether the email (private state) is backed up. */
  accountState: boolean
  history: { at: string; rev: string; kind: 'full' | 'diff'; newBlobs: number; storedBytes: number }[]
}

export async function archiveStatus(archive: AccountArchive): Promise<ArchiveStatus> {
  const state = await archive.load()
  const seen = new Set<string>()
  let storedBytes = 0
  const history: ArchiveStatus['history'] = []
  for (const m of state.manifests) {
    let run = 0
    for (const ref of [m.repo.object, m.preferences, m.accountState, ...m.blobs.map((b) => b.object)]) {
      if (!ref || seen.has(ref.key)) continue
      seen.add(ref.key)
      run += ref.size
    }
    storedBytes += run
    history.push({
      at: m.createdAt,
      rev: m.repo.rev,
      kind: m.repo.kind,
      newBlobs: m.blobs.length,
      storedBytes: run,
    })
  }
  const latest = state.latest
  return {
    did: archive.did,
    runs: state.manifests.length,
    ...(latest && {
      last: {
        at: latest.createdAt,
        rev: latest.repo.rev,
        records: latest.repo.records,
        source: latest.source,
      },
    }),
    blobs: state.blobs.size,
    storedBytes,
    missingBlobs: latest?.missingBlobs ?? [],
    preferences: latest?.preferences != null,
    accountState: latest?.accountState != null,
    history,
  }
}

export function formatStatus(s: ArchiveStatus): string {
  if (!s.last) return `${s.did}: no backup yet (run "pds-backup run ${s.did} ...")`
  const lines = [
    `${s.did}`,
    `  last backup   ${s.last.at} from ${s.last.source}`,
    `  repo          rev ${s.last.rev}, ${s.last.records} records`,
    `  blobs         ${s.blobs} held${s.missingBlobs.length ? `, ${s.missingBlobs.length} missing at the PDS` : ''}`,
    `  preferences   ${s.preferences ? 'backed up' : "not backed up (needs the account's sign-in)"}`,
    `  email         ${s.accountState ? 'backed up' : "not backed up (needs the account's sign-in)"}`,
    `  stored        ${(s.storedBytes / 1048576).toFixed(1)} MiB in ${s.runs} runs`,
    ...s.missingBlobs.map((m) => `  missing       ${m.cid}: ${m.reason}`),
    '  history',
    ...s.history.map(
      (h) =>
        `    ${h.at}  ${h.rev}  ${h.kind === 'diff' ? 'diff' : 'full'}  +${h.newBlobs} blobs  ${(h.storedBytes / 1024).toFixed(1)} KiB`,
    ),
  ]
  return lines.join('\n')
}
