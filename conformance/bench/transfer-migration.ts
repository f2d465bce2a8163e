import type { InboundTransfer } from '@pds-transfer/destination'
import { headlessAuthorize } from '../src/harness/headless-oauth.ts'
import { Phases, type TimelineEvent } from './timeline.ts'

/** What the benchmark can see inside the destination PDS (its own process) during a transfer. */
export interface DestinationProbe {
  /** Starts recording the transfer's stage changes. */
  watch(transferId: string): Promise<void>
  /** Resolves when the pull has ended (the transfer waits for the PLC code, or failed). */
  pulled(transferId: string): Promise<{ transfer: InboundTransfer; timeline: TimelineEvent[] }>
  transfer(transferId: string): Promise<InboundTransfer | undefined>
}

export interface TransferMigrationInput {
  /** The destination PDS, where the user starts (its /migrate page). */
  destinationUrl: string
  handle: string
  password: string
  destination: DestinationProbe
  /** Reads the PLC code the source emails once the destination has verified the data. */
  readPlcToken(): Promise<string>
}

/** Timings and volumes of one 0014 transfer. */
export interface TransferMigrationResult {
  transferId: string
  seconds: number
  phases: Phases['list']
  /** Phases inside the pull, from the destination's record of the transfer. */
  pull: Phases['list']
  records: number
  blobs: number
  bytesReceived: number
}

/**
 * The 0014 migration as a user does it at the destination's /migrate page, timed from the
 * handle typed in to the account active at the destination: the check page (handle, the
 * source's capabilities), OAuth sign-in and consent at the source's own authorization server
 * (headless, with the password), the destination's encrypted pull (repo verified and imported,
 * blobs, preferences, private state, reconciliation), the PLC code, completeTransfer, the PLC
 * operation and activation. No data passes through the user's client.
 */
export async function migrateByTransfer(input: TransferMigrationInput): Promise<TransferMigrationResult> {
  const { destinationUrl: dest } = input
  const phases = new Phases()

  const check = await fetch(`${dest}/migrate/check?identifier=${encodeURIComponent(input.handle)}`)
  const checkPage = await check.text()
  const did = /name="did" value="([^"]+)"/.exec(checkPage)?.[1]
  if (!check.ok || !did) throw new Error(`/migrate/check: HTTP ${check.status}: ${checkPage.slice(0, 300)}`)
  phases.lap('/migrate/check (handle, source capabilities)')

  const authorize = await fetch(`${dest}/migrate/authorize`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: dest },
    body: new URLSearchParams({ did }),
  })
  const location = authorize.headers.get('location')
  if (authorize.status !== 303 || !location) throw new Error(`/migrate/authorize: HTTP ${authorize.status}`)
  const callback = await headlessAuthorize(new URL(location), {
    username: input.handle,
    password: input.password,
  })
  const started = await fetch(callback, { redirect: 'manual' })
  const transferId = new URL(started.headers.get('location') ?? '', dest).pathname.split('/').at(-1) ?? ''
  if (started.status !== 303 || !transferId) throw new Error(`/migrate/callback: HTTP ${started.status}`)
  phases.lap('OAuth sign-in + consent at the source (PAR, PKCE, DPoP), transfer started')

  await input.destination.watch(transferId)
  const { transfer: pulled, timeline } = await input.destination.pulled(transferId)
  if (pulled.stage !== 'awaitingPlcToken') {
    throw new Error(`the pull stopped at ${pulled.stage}: ${JSON.stringify(pulled.failure)}`)
  }
  const pullStartedAt = phases.lastAt
  phases.lap('pull: stream, decrypt, verify, import, reconcile')

  const token = await input.readPlcToken()
  const done = await fetch(`${dest}/migrate/transfer/${transferId}/complete`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: dest },
    body: new URLSearchParams({ token }),
  })
  const completed = await input.destination.transfer(transferId)
  if (done.status >= 400 || completed?.status !== 'completed') {
    throw new Error(`completion failed: ${JSON.stringify(completed?.failure ?? completed?.status)}`)
  }
  phases.lap('PLC code, completeTransfer, PLC operation, activation')

  return {
    transferId,
    seconds: phases.seconds,
    phases: phases.list,
    pull: pullPhases(timeline, pullStartedAt, pulled.dialect),
    records: pulled.progress.records,
    blobs: pulled.progress.blobsReceived + pulled.progress.blobsReconciled,
    bytesReceived: pulled.progress.bytesReceived,
  }
}

/**
 * The pull split at the moments the destination recorded. A v1 pull: the well-known read, the
 * account created, stream open, repo staged, repo indexed, blobs, end. A draft or plain pull (the sync endpoints, `PlainPdsReader`): the
 * account created (after the draft's exportAccount), repo staged, repo indexed, the blobs
 * listBlobs names fetched by getBlob (stage `streaming` until `reconciling`), then any blob the
 * records name that was not listed, preferences, email and the PLC code asked of the source.
 */
function pullPhases(
  timeline: TimelineEvent[],
  startedAt: number,
  dialect: InboundTransfer['dialect'],
): Phases['list'] {
  const at = (event: string) => timeline.find((e) => e.event === event)?.at
  const marks: Array<[string, number | undefined]> =
    dialect === undefined
      ? [
          ["well-known (the source's algorithms and extensions)", at('account creation started')],
          ['account created (deactivated, new signing key)', at('account created')],
          ['exportAccount until its response (HPKE set up)', at('stream open')],
          ['repo CAR (first frame): receive, decrypt, verify, stage', at('repo verified and staged')],
          ['repo: blocks copied, records indexed in the actor store', at('repo indexed')],
          ['blobs, preferences, private state, end of stream', at('stream ended')],
          ['reconciliation, PLC code sent', at('stage awaitingPlcToken')],
        ]
      : [
          [
            dialect === 'draft'
              ? 'dialect probe, exportAccount (private state)'
              : 'dialect probe (no well-known: a plain PDS)',
            at('account creation started'),
          ],
          ['account created (deactivated, new signing key)', at('account created')],
          ['repo: getRepo, verify, stage', at('repo verified and staged')],
          ['repo: blocks copied, records indexed in the actor store', at('repo indexed')],
          ['blobs: listBlobs, getBlob (bounded concurrency), hash, store', at('stage reconciling')],
          ['unlisted blobs, preferences, email, PLC code requested', at('stage awaitingPlcToken')],
        ]
  const phases: Phases['list'] = []
  let last = startedAt
  for (const [name, time] of marks) {
    if (time === undefined) continue
    phases.push({ name, seconds: (time - last) / 1000 })
    last = time
  }
  return phases
}
