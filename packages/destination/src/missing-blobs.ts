/**
 * The blobs a transfer waiting for its code still lacks: which records use them (for the list
 * the user is shown) and the user's "try those again" (e.g. after the source's operator restored
 * them). Invariant: only a transfer at `awaitingPlcToken` is fetched for, each blob hash-checked
 * against its CID before it is stored (`TransferPuller.reconcile`), and the record's list then
 * holds exactly the blobs still not held.
 */
import type { AccountSink, BlobUse } from './account-sink.ts'
import { EngineError } from './engine-error.ts'
import type { InboundTransfer, InboundTransferStore } from './inbound-transfer.ts'
import type { SourceClient } from './source-client.ts'
import type { TransferPuller } from './transfer-pull.ts'

/** Which records use the blobs still missing from a transfer (empty where the sink cannot tell). */
export async function missingBlobUses(
  options: { store: InboundTransferStore; sink: AccountSink },
  transferId: string,
): Promise<BlobUse[]> {
  const t = await options.store.get(transferId)
  if (!t || t.missingBlobs.length === 0) return []
  return (await options.sink.recordsUsingBlobs?.(t.did, t.missingBlobs)) ?? []
}

/** Fetches the blobs still missing from `t` once more over getBlob; returns the record. */
export async function retryMissingBlobs(
  deps: { store: InboundTransferStore; puller: TransferPuller },
  t: InboundTransfer,
  client: SourceClient | undefined,
): Promise<InboundTransfer> {
  if (t.stage !== 'awaitingPlcToken' || t.missingBlobs.length === 0) return t
  if (!client) throw new EngineError('InvalidState', 'no authorized session with the source; sign in again')
  const progress = { ...t.progress }
  const missing = await deps.puller.reconcile(t.transferId, t.did, client, new Set(t.missingBlobs), progress)
  return deps.store.update(t.transferId, {
    missingBlobs: missing,
    progress: { ...progress, blobsMissing: missing.length },
  })
}
