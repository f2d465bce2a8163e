import type { Keypair } from '@atproto/crypto'
import * as plc from '@did-plc/lib'
import { TransferError } from '@pds-transfer/core'
import type { SignedPlcOperation } from './account-source.ts'

export interface PlcChange {
  newPdsEndpoint: string
  newSigningKey: string
  newRotationKeys: string[]
}

/**
 * Builds and signs the PLC operation that moves `did` to the destination
 * (section 2.2): prev = the DID's last operation; the PDS endpoint and the
 * `atproto` verification method replaced; rotation keys as asked minus our own; handle,
 * other services and verification methods kept.
 *
 * Refuses a change that drops any rotation key other than our own: the user's
 * own recovery keys must survive the move (see spec/decisions.md).
 */
export async function signTransferOperation(
  client: plc.Client,
  did: string,
  rotationKey: Keypair,
  change: PlcChange,
): Promise<SignedPlcOperation> {
  const lastOp = await assertSignable(client, did, rotationKey, change)
  const ourKey = rotationKey.did()
  const op = await plc.createUpdateOp(lastOp, rotationKey, (normalized) => ({
    ...normalized,
    // The leaving PDS removes its own key: it no longer hosts the account.
    rotationKeys: change.newRotationKeys.filter((k) => k !== ourKey),
    verificationMethods: { ...normalized.verificationMethods, atproto: change.newSigningKey },
    services: {
      ...normalized.services,
      atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: change.newPdsEndpoint },
    },
  }))
  return op as unknown as SignedPlcOperation
}

/**
 * Refuses a change this PDS will not sign, before anything is spent on it (the user's code, the
 * account's activity): a tombstoned DID, one this PDS holds no rotation key of, and a change
 * that drops a rotation key other than our own (D8). Returns the DID's last operation.
 */
export async function assertSignable(
  client: plc.Client,
  did: string,
  rotationKey: Keypair,
  change: PlcChange,
): Promise<plc.CompatibleOp> {
  const lastOp = await client.getLastOp(did)
  if (lastOp.type === 'plc_tombstone')
    throw new TransferError('AccountDeactivated', `${did} is tombstoned in PLC`)
  const current = plc.normalizeOp(lastOp)
  const ourKey = rotationKey.did()
  if (!current.rotationKeys.includes(ourKey)) {
    throw new TransferError(
      'ExportFailed',
      `this PDS holds no rotation key of ${did}; it cannot sign the move`,
    )
  }
  const dropped = current.rotationKeys.filter((k) => k !== ourKey && !change.newRotationKeys.includes(k))
  if (dropped.length > 0) {
    throw new TransferError(
      'InvalidRequest',
      `newRotationKeys drops the account's own rotation keys: ${dropped.join(', ')}; keep them and add yours`,
    )
  }
  return lastOp
}

/**
 * Makes a signed-but-unsubmitted move unusable before the source takes an account back: it
 * submits an operation that restates the DID's current document (same content, signed by
 * our rotation key) on the same `prev`. PLC takes whichever comes first; the other is a fork
 * signed by a key of the same priority, which it refuses. Returns `moved` when the move won.
 */
export async function supersedeOperation(
  client: plc.Client,
  did: string,
  rotationKey: Keypair,
  signed: SignedPlcOperation,
): Promise<'superseded' | 'moved' | 'stale'> {
  const log = await client.getAuditableLog(did)
  const head = log.filter((e) => !e.nullified).at(-1)
  if (!head) throw new TransferError('ExportFailed', `${did} has no PLC log`)
  if (head.operation.sig === signed.sig) return 'moved'
  // Another operation landed after the move was signed: the move can no longer apply.
  if (head.cid !== signed.prev) return 'stale'
  const restated = await plc.createUpdateOp(head.operation as plc.CompatibleOp, rotationKey, (n) => n)
  try {
    await client.sendOperation(did, restated)
  } catch (err) {
    const after = (await client.getAuditableLog(did)).filter((e) => !e.nullified).at(-1)
    if (after?.operation.sig === signed.sig) return 'moved'
    throw err
  }
  return 'superseded'
}
