/**
 * The backup service's status page (`pds-backup serve`, at `/`): per account, the last backup,
 * its size, blobs held and missing, whether the live PDS has moved on since, the history, the
 * next run, and a run under way with its progress. Plain HTML, readable without scripts; it
 * refreshes itself while a run is under way. Only for the operator: HTTP Basic with the
 * operator token as the password.
 */
import { timingSafeEqual } from 'node:crypto'
import { AccountArchive, type ArchiveKeys, type ArchiveStore } from '@pds-transfer/archive'
import { type DidResolver, esc, forEachBounded, page, size } from '@pds-transfer/destination'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { type BackupProgress, publicClient } from './account-backup.ts'
import { type ArchiveStatus, archiveStatus } from './archive-status.ts'

export interface StatusPageOptions {
  store: ArchiveStore
  keys: ArchiveKeys
  resolver: DidResolver
  operatorToken: string
  /** Runs under way, by DID (the scheduler's). */
  running?: () => ReadonlyMap<string, BackupProgress>
  /** When the scheduler runs next, if it does. */
  nextRunAt?: () => Date | undefined
}

/** The live PDS's head compared with the backup's. */
export type LiveHead = { rev: string } | { error: string }

/** The DIDs the store holds backups of (those with a manifest). */
export async function archivedAccounts(store: ArchiveStore): Promise<string[]> {
  const dids = new Set<string>()
  for await (const key of store.list('did:')) {
    const [did, kind] = key.split('/')
    if (did && kind === 'manifests') dids.add(did)
  }
  return [...dids].sort()
}

/** The rev of the account's head at its PDS now, or why it could not be had. */
export async function liveHead(resolver: DidResolver, did: string): Promise<LiveHead> {
  try {
    const client = publicClient((await resolver.resolve(did)).pds)
    const res = await client.fetch(`/xrpc/com.atproto.sync.getLatestCommit?did=${encodeURIComponent(did)}`, {
      signal: AbortSignal.timeout(5000),
    })
    const body = (await res.json()) as { rev?: unknown; error?: unknown; message?: unknown }
    if (res.ok && typeof body.rev === 'string') return { rev: body.rev }
    return {
      error: `${String(body.error ?? `HTTP ${res.status}`)}${body.message ? `: ${String(body.message)}` : ''}`,
    }
  } catch (err) {
    return { error: (err as Error).message }
  }
}

export const backupStatusPage = fp(
  async (app: FastifyInstance, opts: StatusPageOptions) => {
    app.get('/', async (request, reply) => {
      if (!authorized(request.headers.authorization, opts.operatorToken)) {
        return reply
          .code(401)
          .header('www-authenticate', 'Basic realm="pds-backup", charset="UTF-8"')
          .type('text/html; charset=utf-8')
          .send(
            page(
              'Sign in',
              '<p class="error" role="alert">This page is for the operator: sign in with any user name and the operator token as the password.</p>',
            ),
          )
      }
      const running = opts.running?.() ?? new Map()
      const rows: { status: ArchiveStatus; live: LiveHead; progress?: BackupProgress }[] = []
      await forEachBounded(await archivedAccounts(opts.store), 4, async (did) => {
        const status = await archiveStatus(new AccountArchive(opts.store, opts.keys, did))
        const progress = running.get(did)
        rows.push({ status, live: await liveHead(opts.resolver, did), ...(progress && { progress }) })
      })
      rows.sort((a, b) => a.status.did.localeCompare(b.status.did))
      const next = opts.nextRunAt?.()
      return (
        reply
          .header('cache-control', 'no-store')
          .type('text/html; charset=utf-8')
          // While a run is under way the page reloads itself (it has no script).
          .send(
            page('Backups', renderStatus(rows, next)).replace(
              '</head>',
              running.size > 0 ? '<meta http-equiv="refresh" content="5">\n</head>' : '</head>',
            ),
          )
      )
    })
  },
  { name: '@pds-transfer/backup/status-page', fastify: '5.x' },
)

/** The page's body: a summary, then one section per account. */
export function renderStatus(
  rows: { status: ArchiveStatus; live: LiveHead; progress?: BackupProgress }[],
  next: Date | undefined,
): string {
  if (rows.length === 0)
    return '<p>No backups yet. Run <code>pds-backup run DID …</code>, or start the service with <code>--account DID --every 24</code>.</p>'
  const missing = rows.reduce((n, r) => n + r.status.missingBlobs.length, 0)
  const behind = rows.filter((r) => 'rev' in r.live && r.live.rev !== r.status.last?.rev).length
  const summary = `<p>${rows.length} account${rows.length === 1 ? '' : 's'}, ${size(rows.reduce((n, r) => n + r.status.storedBytes, 0))} stored${
    next ? `; next run ${esc(when(next.toISOString()))}` : ''
  }.</p>
${missing > 0 ? `<p class="warn">${missing} blob${missing === 1 ? '' : 's'} the PDSes could not serve (below, per account): asked for again at every run.</p>` : ''}
${behind > 0 ? `<p class="warn">${behind} account${behind === 1 ? ' has' : 's have'} changed at the PDS since the last backup: the next run brings the change.</p>` : ''}`
  return summary + rows.map(account).join('\n')
}

function account({
  status: s,
  live,
  progress,
}: {
  status: ArchiveStatus
  live: LiveHead
  progress?: BackupProgress
}): string {
  const liveText =
    'error' in live
      ? `<span class="warn">the PDS did not answer (${esc(live.error)}): the backup is all there is</span>`
      : live.rev === s.last?.rev
        ? 'up to date with the PDS'
        : `the PDS is at rev <code>${esc(live.rev)}</code>, newer than the backup`
  const running = progress
    ? `<p class="ok" role="status">Backing up now: ${
        progress.phase === 'blobs'
          ? `blob ${progress.done} of ${progress.total} (${size(progress.bytes)})</p><progress max="${progress.total}" value="${progress.done}"></progress>`
          : progress.phase === 'repo'
            ? 'the repo…</p>'
            : 'checking the head…</p>'
      }`
    : ''
  return `<section aria-labelledby="h-${esc(s.did)}">
<h2 id="h-${esc(s.did)}"><code>${esc(s.did)}</code></h2>
${running}
<dl>
<dt>Last backup</dt><dd>${s.last ? `${esc(when(s.last.at))}, rev <code>${esc(s.last.rev)}</code> (${s.last.records} records), from ${esc(s.last.source)}` : 'none yet'}</dd>
<dt>Live</dt><dd>${liveText}</dd>
<dt>Blobs</dt><dd>${s.blobs} held${s.missingBlobs.length ? `, <strong>${s.missingBlobs.length} missing at the PDS</strong>` : ', none missing'}</dd>
<dt>Preferences</dt><dd>${s.preferences ? 'backed up' : "not backed up (needs the account's grant)"}</dd>
<dt>Email</dt><dd>${s.accountState ? 'backed up' : "not backed up (needs the account's grant)"}</dd>
<dt>Stored</dt><dd>${size(s.storedBytes)} in ${s.runs} run${s.runs === 1 ? '' : 's'}</dd>
</dl>
${
  s.missingBlobs.length
    ? `<details><summary>Missing blobs</summary><ul>${s.missingBlobs.map((m) => `<li><code>${esc(m.cid)}</code>: ${esc(m.reason)}</li>`).join('')}</ul></details>`
    : ''
}
<details><summary>History</summary><table><thead><tr><th scope="col">When</th><th scope="col">Rev</th><th scope="col">Repo</th><th scope="col">New blobs</th><th scope="col">Stored</th></tr></thead><tbody>
${s.history
  .slice()
  .reverse()
  .map(
    (h) =>
      `<tr><td>${esc(when(h.at))}</td><td><code>${esc(h.rev)}</code></td><td>${h.kind}</td><td>${h.newBlobs}</td><td>${size(h.storedBytes)}</td></tr>`,
  )
  .join('\n')}
</tbody></table></details>
</section>`
}

/** "2026-12-03 20:25 UTC": an ISO time as people read it. */
function when(iso: string): string {
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`
}

function authorized(header: string | undefined, token: string): boolean {
  if (!header?.startsWith('Basic ')) return false
  const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8')
  const password = Buffer.from(decoded.slice(decoded.indexOf(':') + 1))
  const expected = Buffer.from(token)
  return password.length === expected.length && timingSafeEqual(password, expected)
}
