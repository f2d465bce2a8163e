/**
 * Permissioned data (proposal 0016) from a plain PDS: nothing is negotiated, so the source's
 * `com.atproto.space.listSpaces` is probed with the pull's client first (spec/permissioned-data.md,
 * "From a plain PDS"). Not served (404, `MethodNotImplemented`): no permissioned data there, nothing
 * said. Refused for lack of scope (401, 403): the data may exist but was not granted; the move goes
 * on and the user is told exactly what stays behind. Answered: `importPermissionedData`.
 */
import { SPACE_MIGRATION_SCOPE } from '@pds-transfer/core'
import type { ExtraOutcome } from './plain-pds-reader.ts'
import { importPermissionedData } from './space-import.ts'
import type { SpaceReaderOptions } from './space-reader.ts'
import type { PermissionedDataSink } from './space-sink.ts'

/** How long the probe may take. */
const PROBE_TIMEOUT_MS = 10_000

/** What the probe found: the methods absent, refused (with the source's words), or served. */
export type SpaceProbe =
  | { kind: 'absent' }
  | { kind: 'refused'; status: number; why: string }
  | { kind: 'served' }

/** Asks `listSpaces` for one space, to tell which of {@link SpaceProbe} the source is. */
export async function probeSpaces(client: SpaceReaderOptions['client']): Promise<SpaceProbe> {
  let res: Response
  try {
    res = await client.fetch('/xrpc/com.atproto.space.listSpaces?limit=1', {
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
    })
  } catch {
    // No answer is not "no data": the reader asks again, with its retries, and fails by name.
    return { kind: 'served' }
  }
  const body = (await res.json().catch(() => undefined)) as { error?: unknown; message?: unknown } | undefined
  if (res.ok) return { kind: 'served' }
  const error = typeof body?.error === 'string' ? body.error : undefined
  if (res.status === 404 || error === 'MethodNotImplemented' || res.status === 501) return { kind: 'absent' }
  if (res.status === 401 || res.status === 403) {
    const message = typeof body?.message === 'string' ? `: ${body.message}` : ''
    return { kind: 'refused', status: res.status, why: `${error ?? `HTTP ${res.status}`}${message}` }
  }
  // Anything else is the reader's to fail by name (its retries, its SourceRefused).
  return { kind: 'served' }
}

/**
 * The plain reader's `extra` step: probes, then imports all of the account's permissioned data
 * when the source serves it to this grant. A refusal is reported in `notMoved`, not failed: the
 * public data is the user's to move, and the user decides knowing what stays behind.
 */
export async function pullPlainPermissionedData(
  sink: PermissionedDataSink,
  options: SpaceReaderOptions,
): Promise<ExtraOutcome> {
  const probe = await probeSpaces(options.client)
  if (probe.kind === 'absent') return { missing: [] }
  if (probe.kind === 'refused')
    return {
      missing: [],
      notMoved: [
        `your permissioned data (the spaces of proposal 0016: your records and files in every space, and the member lists and settings of the spaces you own): your old server refused to give it (${probe.why}); this server asked for the scope ${SPACE_MIGRATION_SCOPE}. It stays on your old server and will not be here after the move.`,
      ],
    }
  return { missing: await importPermissionedData(sink, options) }
}
