/**
 * The identity step of a restore: the operation that takes the DID to this server, prepared
 * here for the user to sign where their key is (a browser page, `pds-identity recover`), and
 * the signed operation checked before it is stored and submitted. The private key never reaches
 * this server. Invariant: nothing is stored for submission unless PLC's own rules
 * (`assureValidNextOp` over the audit log: signature, 72-hour nullification) accept it and it
 * names this server, the account's new signing key here, and the user's key first.
 */
import { encode } from '@atproto/lex-cbor'
import * as plc from '@did-plc/lib'
import {
  IdentityError,
  planRecovery,
  type RecoveryPlan,
  unsignedRecoveryOperation,
} from '@pds-transfer/identity'
import { CID } from 'multiformats/cid'
import { EngineError } from './engine-error.ts'
import type { InboundTransfer } from './inbound-transfer.ts'
import { RestoreRefusal } from './restore-admission.ts'
import { normalizeUrl } from './transfer-completion.ts'

/** What the user is asked to sign, and what signing it does. */
export interface RestoreOperationRequest {
  /** The PLC operation without `sig`, as JSON. */
  operation: plc.UnsignedOperation
  /** Its DAG-CBOR bytes, base64: what the user's key signs (ECDSA over SHA-256, low-S, 64 bytes). */
  bytesToSign: string
  /** `update`: a new operation after the last; `fork`: it undoes `nullifies` changes made without the user. */
  kind: RecoveryPlan['kind']
  nullifies: { cid: string; createdAt: string }[]
  /** For a fork: until when PLC allows it (ISO time). */
  deadline?: string
}

/** Who the identity goes to: this server, and the account's keys here. */
export interface RestoreTarget {
  serviceUrl: string
  /** This server's PLC rotation key, ranked after the user's. */
  rotationKey: string
}

/** The operation for `t` to be signed by its user's key, planned over PLC's log as it is now. */
export async function restoreOperationRequest(
  client: plc.Client,
  t: InboundTransfer & { restore: { userKey: string }; signingKey: string },
  target: RestoreTarget,
  now: Date = new Date(),
): Promise<RestoreOperationRequest> {
  const log = await auditLog(client, t.did)
  let plan: RecoveryPlan
  try {
    plan = await planRecovery(log, t.restore.userKey, now)
  } catch (err) {
    if (err instanceof IdentityError) throw new RestoreRefusal(err.reason, err.message, err.next)
    throw err
  }
  const operation = unsignedRecoveryOperation(plan, t.restore.userKey, {
    pds: target.serviceUrl,
    signingKey: t.signingKey,
    pdsRotationKey: target.rotationKey,
  })
  return {
    operation,
    bytesToSign: Buffer.from(encode(operation as never)).toString('base64'),
    kind: plan.kind,
    nullifies:
      plan.kind === 'fork' ? plan.nullifies.map((op) => ({ cid: op.cid, createdAt: op.createdAt })) : [],
    ...(plan.kind === 'fork' && { deadline: plan.deadline.toISOString() }),
  }
}

/**
 * The user's signed operation, checked: PLC would accept it now, the user's key signed it, and
 * it brings the identity here. Throws `EngineError('InvalidState')` with the reason otherwise.
 */
export async function checkRestoreOperation(
  client: plc.Client,
  t: InboundTransfer & { restore: { userKey: string }; signingKey: string },
  op: unknown,
  target: RestoreTarget,
): Promise<plc.Operation> {
  const parsed = plc.def.operation.safeParse(op)
  if (!parsed.success)
    throw new EngineError('InvalidState', `that is not a signed PLC operation: ${parsed.error.message}`)
  const next = parsed.data
  const log = await auditLog(client, t.did)
  const indexed: plc.IndexedOperation[] = log.map((e) => ({
    did: e.did,
    operation: e.operation,
    cid: CID.parse(e.cid),
    nullified: e.nullified,
    createdAt: new Date(e.createdAt),
  }))
  try {
    await plc.assureValidSig([t.restore.userKey], next)
  } catch {
    throw new EngineError('InvalidState', `the operation is not signed by your key ${t.restore.userKey}`)
  }
  try {
    await plc.assureValidNextOp(t.did, indexed, next)
  } catch (err) {
    throw new EngineError('InvalidState', `PLC would refuse the operation: ${(err as Error).message}`)
  }
  const pds = next.services.atproto_pds
  if (
    pds?.type !== 'AtprotoPersonalDataServer' ||
    normalizeUrl(pds.endpoint) !== normalizeUrl(target.serviceUrl)
  )
    throw new EngineError(
      'InvalidState',
      `the operation points the account at ${pds?.endpoint}, not at this server`,
    )
  if (next.verificationMethods.atproto !== t.signingKey)
    throw new EngineError(
      'InvalidState',
      `the operation sets the signing key ${next.verificationMethods.atproto}, not the one this server made for the account (${t.signingKey})`,
    )
  if (next.rotationKeys[0] !== t.restore.userKey)
    throw new EngineError('InvalidState', `the operation does not keep your key ${t.restore.userKey} first`)
  return next
}

async function auditLog(client: plc.Client, did: string): Promise<plc.ExportedOp[]> {
  return client.getAuditableLog(did).catch((err: unknown) => {
    throw new EngineError(
      'PlcUnreachable',
      `the PLC directory did not answer (${(err as Error).message}); try again`,
    )
  })
}
