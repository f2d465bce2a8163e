import type * as plc from '@did-plc/lib'
import type { InboundTransfer, InboundTransferStore } from './inbound-transfer.ts'
import { normalizeUrl } from './transfer-completion.ts'

/**
 * Checks each completed transfer inside its watch window: if the DID's PLC state no longer
 * points at us with the account's key here, records a rollback (the user must act with their
 * own rotation key). Returns the transfers newly flagged.
 */
export async function checkRollbacks(
  options: { store: InboundTransferStore; plc: plc.Client; serviceUrl: string },
  now: number,
): Promise<InboundTransfer[]> {
  const flagged: InboundTransfer[] = []
  for (const t of await options.store.listWatched(now)) {
    if (t.rollback) continue
    const data = await options.plc.getDocumentData(t.did)
    const pds = data.services.atproto_pds?.endpoint
    if (
      normalizeUrl(pds ?? '') === normalizeUrl(options.serviceUrl) &&
      data.verificationMethods.atproto === t.signingKey
    ) {
      continue
    }
    const last = (await options.plc.getAuditableLog(t.did)).filter((e) => !e.nullified).at(-1)
    flagged.push(
      await options.store.update(t.transferId, {
        rollback: {
          detectedAt: now,
          operationCid: last?.cid ?? 'unknown',
          message: `PLC now points ${t.did} at ${pds ?? 'no PDS'}; use your own rotation key to restore it`,
        },
      }),
    )
  }
  return flagged
}
