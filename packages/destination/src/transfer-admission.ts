import type { AccountSink } from './account-sink.ts'
import type { DidResolver, ResolvedDid } from './did-resolver.ts'
import { EngineError } from './engine-error.ts'
import { type AdmissionRefusal, emptyProgress, type InboundTransfer } from './inbound-transfer.ts'
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
