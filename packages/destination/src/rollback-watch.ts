/**
 * The rollback watch after a move (section "Adversarial migration"): one use of the identity
 * watcher (`checkIdentities` of @pds-transfer/identity). The DIDs are the completed transfers
 * inside their watch window; what is expected of each is that PLC keeps naming this server with
 * the signing key it made for the account, and that only keys the identity had when it arrived
 * sign. The log is read from the operation that moved the account here, so a change made between
 * two rounds of the watch, or while this process was down, is still found.
 */
import type * as plc from '@did-plc/lib'
import { checkIdentities, type IdentityAlert } from '@pds-transfer/identity'
import type { InboundTransfer, InboundTransferStore } from './inbound-transfer.ts'

export interface RollbackWatchOptions {
  store: InboundTransferStore
  plc: plc.Client
  /** Our public URL: the PDS the identity must keep naming. */
  serviceUrl: string
  /** Our PLC rotation key: its operations are expected; the user's keys are the way back. */
  rotationKey: string
}

/** A transfer newly flagged, with the operation that moved the account away. */
export interface RollbackFinding {
  transfer: InboundTransfer
  alert: IdentityAlert
}

/**
 * Checks each completed transfer inside its watch window and records a rollback on the first
 * unexpected operation still in force: who signed it, until when it can be undone, and how (the
 * user's rotation key, at this server's /recover). A DID PLC does not answer for is passed to
 * `onFailure` and tried again next round.
 */
export async function checkRollbacks(
  options: RollbackWatchOptions,
  now: number,
  onFailure: (failure: { did: string; message: string }) => void = () => {},
): Promise<RollbackFinding[]> {
  const watched = (await options.store.listWatched(now)).filter((t) => !t.rollback)
  const byDid = new Map(watched.map((t) => [t.did, t]))
  const dids: Record<string, { cid: string; createdAt: string }> = {}
  const targets = []
  for (const t of watched) {
    const arrival = await arrivalOperation(options.plc, t).catch((err: unknown) => {
      onFailure({ did: t.did, message: `PLC did not answer (${(err as Error).message})` })
      return null
    })
    if (arrival === null) continue
    if (!arrival) {
      onFailure({ did: t.did, message: 'PLC has no operation that moved it here' })
      continue
    }
    dids[t.did] = { cid: arrival.entry.cid, createdAt: arrival.entry.createdAt }
    const signers = arrival.rotationKeys
    targets.push({
      did: t.did,
      expect: {
        signers,
        pds: options.serviceUrl,
        ...(t.signingKey && { signingKey: t.signingKey }),
        recoveryKeys: signers.filter((k) => k !== options.rotationKey),
      },
    })
  }
  const check = await checkIdentities({
    plc: options.plc,
    targets,
    state: { version: 1, dids },
    now: () => new Date(now),
  })
  check.failures.forEach(onFailure)
  const findings: RollbackFinding[] = []
  for (const alert of check.alerts) {
    const t = byDid.get(alert.did)
    if (!t || alert.expected || alert.nullified || findings.some((f) => f.alert.did === alert.did)) continue
    const transfer = await options.store.update(t.transferId, {
      rollback: {
        detectedAt: now,
        operationCid: alert.cid,
        message: rollbackMessage(alert, options.serviceUrl),
      },
    })
    findings.push({ transfer, alert })
  }
  return findings
}

/**
 * The operation that moved the account here: the one this server submitted (matched by its
 * signature), or for a restore the user submitted themselves, the first that names this server
 * with the account's key. The log is fetched again by the watcher; this read finds where to start.
 */
async function arrivalOperation(
  client: plc.Client,
  t: InboundTransfer,
): Promise<{ entry: plc.ExportedOp; rotationKeys: string[] } | undefined> {
  const log = await client.getAuditableLog(t.did)
  const sig = t.plcOperation?.sig
  const entry =
    log.find((e) => sig !== undefined && e.operation.sig === sig) ??
    log.find(
      (e) => e.operation.type === 'plc_operation' && e.operation.verificationMethods.atproto === t.signingKey,
    )
  if (entry?.operation.type !== 'plc_operation') return undefined
  return { entry, rotationKeys: entry.operation.rotationKeys }
}

/** The rollback in words: what happened, who signed it, by when and how the user can undo it. */
function rollbackMessage(alert: IdentityAlert, serviceUrl: string): string {
  const left =
    alert.msLeft > 0 ? `${Math.floor(alert.msLeft / 3_600_000)} hours left` : 'that time has passed'
  const who = alert.signedBy
    ? `signed by ${alert.signedBy}`
    : 'with a signature no key of the identity verifies'
  const what = `On ${alert.createdAt} a PLC operation ${who} changed this account's identity: ${alert.changes.join('; ')}.`
  const r = alert.recovery
  if (r?.possible)
    return `${what} Your rotation key ${r.key} can undo it until ${alert.deadline} (${left}): use it at ${serviceUrl.replace(/\/+$/, '')}/recover, or run: ${r.command}`
  if (r) return `${what} Your rotation key ${r.key} cannot undo it (${r.reason}): ${r.message}. ${r.next}`
  return `${what} A rotation key ranked above the one that signed it can undo it until ${alert.deadline} (${left}); this account has no key of yours to do it with.`
}
