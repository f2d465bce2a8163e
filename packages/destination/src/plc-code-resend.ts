/**
 * "Email me a new code", in every dialect (decision 8): a plain PDS and a draft source send the
 * PLC code the standard way (`requestPlcOperationSignature`), a v1 source through the
 * `plc-token-refresh` extension. Invariant: asked only while the transfer waits for its code,
 * and a refusal is the source's, passed on by name (`SourceError`), never recorded as a failure
 * of the move.
 */
import { NSID } from '@pds-transfer/core'
import { EngineError } from './engine-error.ts'
import type { InboundTransfer, InboundTransferStore } from './inbound-transfer.ts'
import { requestPlainPlcCode } from './plain-pds-signer.ts'
import { type SourceClient, SourceError } from './source-client.ts'

/**
 * Asks the source to email the user a fresh PLC code for `t`. Throws `SourceError` when the
 * source refuses (e.g. `RateLimitExceeded`) and `EngineError` when it cannot do it at all.
 */
export async function resendPlcCode(
  store: InboundTransferStore,
  t: InboundTransfer,
  client: SourceClient | undefined,
): Promise<void> {
  const { transferId } = t
  if (t.stage !== 'awaitingPlcToken') {
    throw new EngineError(
      'InvalidState',
      `transfer ${transferId} is ${t.status}/${t.stage}, not waiting for a token`,
    )
  }
  if (!client) throw new EngineError('InvalidState', 'no authorized session with the source; sign in again')
  // A draft source sends the code the standard way too (its step 11a).
  if (t.dialect === 'plain' || t.dialect === 'draft') {
    await requestPlainPlcCode(client)
    await store.update(transferId, { plcCodeRequestedAt: Date.now(), failure: undefined })
    return
  }
  const res = await client.fetch(`/xrpc/${NSID.requestPlcToken}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ did: t.did, transferId }),
  })
  if (res.ok) return
  const err = await SourceError.from(res, 'requestPlcToken')
  if (res.status === 404 && err.error !== 'TransferNotFound') {
    throw new EngineError(
      'InvalidState',
      'the source cannot send a new code (it lacks the plc-token-refresh extension)',
    )
  }
  throw err
}
