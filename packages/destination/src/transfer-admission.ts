/**
 * Whether a new transfer may begin, whichever reader will pull it: the account's DID document
 * names the source, the account does not already live here, a copy is read only where it helps,
 * and the limits hold. Invariant: a transfer is recorded only with a worker slot taken and the
 * store's one-per-DID and per-source limits passed in the same atomic step that records it.
 */
import type { AccountSink } from './account-sink.ts'
import type { DidResolver, ResolvedDid } from './did-resolver.ts'
import { EngineError } from './engine-error.ts'
import {
  type AdmissionRefusal,
  emptyProgress,
  type InboundTransfer,
  type InboundTransferStore,
} from './inbound-transfer.ts'
import type { PullWorkers } from './pull-workers.ts'
import type { SourceDialect } from './source-dialect.ts'
import { normalizeUrl } from './transfer-completion.ts'
import { createTransferId } from './transfer-id.ts'

/**
 * Whether a new transfer of `did` from `sourceUrl` may begin, whichever reader will pull it:
 * the DID document must name that source as the account's PDS, and the account must not
 * already live here. Returns the resolved identity. (The store then admits the record
 * atomically against the one-per-DID and per-source limits; `refusalError` names its refusal.)
 */
export async function checkNewTransfer(
  deps: { resolver: DidResolver; sink: AccountSink; serviceUrl: string },
  did: string,
  sourceUrl: string,
): Promise<ResolvedDid> {
  const identity = await deps.resolver.resolve(did)
  if (normalizeUrl(identity.pds) !== normalizeUrl(sourceUrl)) {
    throw new EngineError('SourceMismatch', `${did} is hosted at ${identity.pds}, not ${sourceUrl}`)
  }
  if (normalizeUrl(identity.pds) === normalizeUrl(deps.serviceUrl)) {
    throw new EngineError('AccountAlreadyActive', `${did} is already hosted here`)
  }
  if (await deps.sink.isActive(did)) throw new EngineError('AccountAlreadyActive', `${did} is active here`)
  return identity
}

/** The record of a transfer about to be admitted. */
export function newTransfer(did: string, sourceUrl: string, now: number = Date.now()): InboundTransfer {
  return {
    transferId: createTransferId(now),
    did,
    sourceUrl,
    status: 'pending',
    stage: 'created',
    progress: emptyProgress(),
    missingBlobs: [],
    createdAt: now,
    updatedAt: now,
  }
}

/** The store's refusal to admit a transfer, as the engine's error. */
export function refusalError(refusal: AdmissionRefusal, did: string, sourceUrl: string): EngineError {
  return refusal.refused === 'DidInFlight'
    ? new EngineError('InvalidState', `${did} is already being imported`)
    : new EngineError('LimitExceeded', `${refusal.inFlight} transfers from ${sourceUrl} are running`)
}

/**
 * Refuses a copy (`copyFirstClient`) for a source that is not a plain PDS: a v1 source streams
 * the whole account faster than any copy, and a draft source's export is read from it alone.
 */
export function checkCopyAllowed(dialect: SourceDialect, sourceUrl: string): void {
  if (dialect === 'plain') return
  throw new EngineError(
    'InvalidState',
    dialect === 'v1'
      ? `${sourceUrl} streams the whole account itself, faster than any copy; move without one`
      : `${sourceUrl} serves the transfer draft; a copy is read only for a plain PDS: move without one`,
  )
}

/**
 * Takes a worker slot and records a new transfer, or refuses it: the worker limit is this
 * process's own (checked and taken with no await between); the per-source and one-per-DID
 * limits are the store's, checked in the same atomic step that records it.
 */
export async function admitTransfer(
  deps: { store: InboundTransferStore; workers: PullWorkers; maxPerSource: number },
  transfer: InboundTransfer,
): Promise<void> {
  const release = deps.workers.take(transfer.transferId)
  const refusal = await deps.store
    .create(transfer, { source: normalizeUrl(transfer.sourceUrl), maxPerSource: deps.maxPerSource })
    .catch((err: unknown) => {
      release()
      throw err
    })
  if (refusal) {
    release()
    throw refusalError(refusal, transfer.did, transfer.sourceUrl)
  }
}
