import * as plc from '@did-plc/lib'
import { CID } from 'multiformats/cid'

/** What the destination expects the source's signed PLC operation to do. */
export interface ExpectedMove {
  did: string
  pdsEndpoint: string
  signingKey: string
  /** Our PLC rotation key, which must be in the new list. */
  rotationKey: string
  /** The user's own key, which must come first when they asked for it. */
  firstRotationKey?: string
  /**
   * The `newRotationKeys` we sent. The operation must carry exactly these, in this order, with
   * at most the signer's (the leaving PDS's) own key removed (decision D8).
   */
  requestedRotationKeys: string[]
}

/** The returned PLC operation does not do what was asked, or is not validly signed. */
export class PlcOperationError extends Error {
  override readonly name = 'PlcOperationError'
}

/**
 * Checks the operation returned by completeTransfer before it is submitted: it must be the
 * valid next operation of the DID's log (prev and a signature by a current rotation key, as
 * `@did-plc/lib` checks them), point the PDS and signing key at us, include our rotation key,
 * and keep every current rotation key except the one that signed it (the leaving PDS's) in
 * the same order, so the user's own recovery keys keep their priority.
 */
export async function checkPlcMove(
  client: plc.Client,
  op: unknown,
  expected: ExpectedMove,
): Promise<plc.Operation> {
  const parsed = plc.def.operation.safeParse(op)
  if (!parsed.success) throw new PlcOperationError(`not a PLC operation: ${parsed.error.message}`)
  const next = parsed.data
  const log = await client.getAuditableLog(expected.did)
  const indexed: plc.IndexedOperation[] = log.map((e) => ({
    did: e.did,
    operation: e.operation,
    cid: CID.parse(e.cid),
    nullified: e.nullified,
    createdAt: new Date(e.createdAt),
  }))
  const last = indexed.filter((e) => !e.nullified).at(-1)
  if (!last || last.operation.type === 'plc_tombstone')
    throw new PlcOperationError(`${expected.did} has no live PLC state`)
  if (next.prev !== last.cid.toString()) {
    throw new PlcOperationError(`prev ${next.prev} is not the DID's last operation ${last.cid}`)
  }
  try {
    await plc.assureValidNextOp(expected.did, indexed, next)
  } catch (err) {
    throw new PlcOperationError(`PLC would reject it: ${(err as Error).message}`, { cause: err })
  }
  const current = plc.normalizeOp(last.operation)
  const signer = await plc.assureValidSig(current.rotationKeys, next)
  const pds = next.services.atproto_pds
  if (pds?.endpoint !== expected.pdsEndpoint || pds.type !== 'AtprotoPersonalDataServer') {
    throw new PlcOperationError(`it points the PDS at ${pds?.endpoint}, not ${expected.pdsEndpoint}`)
  }
  if (next.verificationMethods.atproto !== expected.signingKey) {
    throw new PlcOperationError(`it sets signing key ${next.verificationMethods.atproto}, not ours`)
  }
  if (!next.rotationKeys.includes(expected.rotationKey)) {
    throw new PlcOperationError('it does not include our rotation key')
  }
  if (expected.firstRotationKey !== undefined && next.rotationKeys[0] !== expected.firstRotationKey) {
    throw new PlcOperationError(`it does not put your key ${expected.firstRotationKey} first`)
  }
  // Nothing but the move: a source that also renames the account or redirects its other
  // services (a labeler, a second key) would have us submit a change the user never asked for.
  const changed = unaskedChanges(current, next)
  if (changed.length > 0)
    throw new PlcOperationError(`it also changes ${changed.join(', ')}, which no one asked for`)
  const kept = current.rotationKeys.filter((k) => k !== signer)
  const order = next.rotationKeys.filter((k) => kept.includes(k))
  if (order.length !== kept.length || order.some((k, i) => k !== kept[i])) {
    throw new PlcOperationError(`it drops or reorders the account's own rotation keys (${kept.join(', ')})`)
  }
  const asked = expected.requestedRotationKeys
  if (
    !sameKeys(next.rotationKeys, asked) &&
    !sameKeys(
      next.rotationKeys,
      asked.filter((k) => k !== signer),
    )
  ) {
    throw new PlcOperationError(
      `its rotation keys (${next.rotationKeys.join(', ')}) are not the ones asked for (${asked.join(', ')})`,
    )
  }
  return next
}

/** What `next` changes beyond the PDS endpoint, the `atproto` key and the rotation keys. */
function unaskedChanges(current: plc.Operation, next: plc.Operation): string[] {
  const changed: string[] = []
  if (JSON.stringify(next.alsoKnownAs) !== JSON.stringify(current.alsoKnownAs))
    changed.push('alsoKnownAs (the handle)')
  const others = (m: Record<string, unknown>, skip: string) =>
    JSON.stringify(
      Object.entries(m)
        .filter(([k]) => k !== skip)
        .sort(([x], [y]) => x.localeCompare(y)),
    )
  if (others(next.services, 'atproto_pds') !== others(current.services, 'atproto_pds'))
    changed.push('other services')
  if (others(next.verificationMethods, 'atproto') !== others(current.verificationMethods, 'atproto'))
    changed.push('other verification methods')
  return changed
}

function sameKeys(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((k, i) => k === b[i])
}
