/**
 * The watcher: new PLC operations of watched identities, each told as an alert a person can act
 * on within PLC's 72-hour window (spec/recovery.md, "Watcher"). The first look at a DID records
 * where its log stands without alerting; afterwards every operation that arrived since is
 * described: who signed it, whether that was expected, what it changed, whether it undid earlier
 * operations, and, when it was not expected, whether and how the person's own key can undo it.
 * The caller keeps the state (`WatchState`) between checks: a restarted watcher with the same
 * state does not alert twice.
 */
import type * as plc from '@did-plc/lib'
import { IdentityError, type IdentityErrorReason } from './identity-error.ts'
import { describeChange } from './operation-change.ts'
import { type OperationStep, replayAuditLog } from './operation-history.ts'
import { planRecovery, RECOVERY_WINDOW_MS } from './recovery-plan.ts'

/** What the person expects of an identity; an operation that breaks any of it is unexpected. */
export interface WatchExpectations {
  /** did:keys whose signatures are expected (the person's own rotation keys, a trusted PDS's). */
  signers?: string[]
  /** The PDS the identity must keep naming (`atproto_pds`). */
  pds?: string
  /** The key posts must keep being signed with (`#atproto`). */
  signingKey?: string
  /**
   * The person's rotation keys, for planning the undo of an unexpected operation (default:
   * `signers`). A server that watches its accounts expects its own signatures but recovers
   * with the user's keys.
   */
  recoveryKeys?: string[]
}

export interface WatchTarget {
  did: string
  expect: WatchExpectations
}

/** Where each watched identity's log stood when last checked; JSON, kept by the caller. */
export interface WatchState {
  version: 1
  dids: Record<string, { cid: string; createdAt: string }>
}

/** How the person can undo an unexpected operation, or why they cannot. */
export type RecoveryAdvice =
  | {
      possible: true
      /** The rotation key that can do it. */
      key: string
      /** `fork`: the operation is undone (nullified); `update`: the key can still change the identity directly. */
      kind: 'update' | 'fork'
      /** The command to run where the key file is, with placeholders in `<…>` to fill (`placeholders`). */
      command: string
      placeholders: Record<string, string>
    }
  | { possible: false; key: string; reason: IdentityErrorReason; message: string; next: string }

/** One new PLC operation of a watched identity. Its JSON is the webhook's `alert` (spec/recovery.md). */
export interface IdentityAlert {
  did: string
  cid: string
  createdAt: string
  /** The rotation key that signed it, or null when no key of the state it followed verifies it. */
  signedBy: string | null
  /** Its rank in that state's rotation keys (1 is the strongest). */
  signerRank: number | null
  /** Whether `signedBy` is an expected signer; null when no signers are expected. */
  signedByExpectedKey: boolean | null
  /** False when any expectation is broken (`problems` says which). */
  expected: boolean
  problems: string[]
  /** What it changed, in words. */
  changes: string[]
  /** Operations it undid when it arrived (a fork). */
  nullifies: string[]
  /** Whether it has itself been undone since (nothing left to do about it). */
  nullified: boolean
  /** Until when a key ranked above the signer can undo it (createdAt + 72 h). */
  deadline: string
  /** Milliseconds left until `deadline` at the check (negative when past). */
  msLeft: number
  /** For an unexpected operation still in force: the way back, or why there is none; else null. */
  recovery: RecoveryAdvice | null
}

/** A DID looked at for the first time: recorded, not alerted. */
export interface WatchStart {
  did: string
  cid: string
  rotationKeys: string[]
  /** Rank of the first recovery key in the current rotation keys (1 is the strongest), or null. */
  yourRank: number | null
}

export interface WatchCheck {
  alerts: IdentityAlert[]
  started: WatchStart[]
  /** DIDs that could not be checked this time (PLC unreachable, no such DID); they are retried next time. */
  failures: { did: string; message: string }[]
  /** The state to keep for the next check. */
  state: WatchState
}

export interface WatchOptions {
  plc: plc.Client
  targets: WatchTarget[]
  state: WatchState
  /** The clock deadlines and the 72-hour rule are judged at. */
  now?: () => Date
  /** Builds the recovery command: the key file of a key, and the PLC directory when not plc.directory. */
  command?: { keyFile?: (key: string) => string | undefined; plcUrl?: string }
  /** Audit logs fetched at once (default 4: a shared PLC directory rate-limits). */
  concurrency?: number
}

/** An empty state: every DID is new. */
export function emptyWatchState(): WatchState {
  return { version: 1, dids: {} }
}

/** Checks every target once against PLC. Never throws for one DID: its failure is listed. */
export async function checkIdentities(options: WatchOptions): Promise<WatchCheck> {
  const result: WatchCheck = {
    alerts: [],
    started: [],
    failures: [],
    state: { version: 1, dids: { ...options.state.dids } },
  }
  const queue = [...options.targets]
  const worker = async () => {
    for (let target = queue.shift(); target; target = queue.shift()) {
      try {
        await checkOne(options, target, result)
      } catch (err) {
        result.failures.push({ did: target.did, message: (err as Error).message })
      }
    }
  }
  await Promise.all(Array.from({ length: options.concurrency ?? 4 }, worker))
  // Alerts in the order the operations arrived, whatever order the workers finished in.
  result.alerts.sort((a, b) => a.createdAt.localeCompare(b.createdAt))
  return result
}

async function checkOne(options: WatchOptions, target: WatchTarget, result: WatchCheck): Promise<void> {
  const log = await options.plc.getAuditableLog(target.did)
  const head = log.at(-1)
  if (!head) throw new Error(`PLC has no operations for ${target.did}`)
  const seen = result.state.dids[target.did]
  const at = seen ? log.findIndex((e) => e.cid === seen.cid) : -1
  result.state.dids[target.did] = { cid: head.cid, createdAt: head.createdAt }
  if (at < 0) {
    // A first look (or a log that no longer holds what was seen): where it stands, not alerts.
    const current = (await replayAuditLog(log)).filter((s) => !s.entry.nullified).at(-1)
    const rotationKeys = current?.after?.rotationKeys ?? []
    const rank = rotationKeys.findIndex((k) => recoveryKeys(target.expect).includes(k))
    result.started.push({
      did: target.did,
      cid: head.cid,
      rotationKeys,
      yourRank: rank < 0 ? null : rank + 1,
    })
    return
  }
  const now = options.now?.() ?? new Date()
  const steps = (await replayAuditLog(log)).slice(at + 1)
  for (const step of steps) result.alerts.push(await alertFor(options, target, step, log, now))
}

async function alertFor(
  options: WatchOptions,
  target: WatchTarget,
  step: OperationStep,
  log: plc.ExportedOp[],
  now: Date,
): Promise<IdentityAlert> {
  const { expect } = target
  const problems: string[] = []
  const signers = expect.signers ?? []
  const signedByExpectedKey =
    signers.length === 0 ? null : step.signedBy !== undefined && signers.includes(step.signedBy)
  if (signers.length === 0 && expect.pds === undefined && expect.signingKey === undefined)
    problems.push('nothing is expected of this identity (no expected keys), so every change is reported')
  if (!step.signedBy) problems.push('no rotation key of the state it followed verifies its signature')
  else if (signedByExpectedKey === false) problems.push(`signed by ${step.signedBy}, not by a key you expect`)
  const pds = step.after?.services.atproto_pds?.endpoint
  if (expect.pds !== undefined && !sameUrl(pds, expect.pds))
    problems.push(`the identity now names ${pds ?? 'no PDS'}, not ${expect.pds}`)
  const signingKey = step.after?.verificationMethods.atproto
  if (expect.signingKey !== undefined && signingKey !== expect.signingKey)
    problems.push(`posts are now to be signed with ${signingKey ?? 'no key'}, not ${expect.signingKey}`)
  // Deleting the identity is expected only from a key named as expected.
  if (!step.after && signedByExpectedKey !== true) problems.push('it deleted the identity')
  const expected = problems.length === 0
  const changes = describeChange(step.before, step.entry.operation)
  if (step.nullifies.length > 0)
    changes.push(`undid ${step.nullifies.length} earlier operation(s) (a fork): ${step.nullifies.join(', ')}`)
  const deadline = new Date(new Date(step.entry.createdAt).getTime() + RECOVERY_WINDOW_MS)
  return {
    did: target.did,
    cid: step.entry.cid,
    createdAt: step.entry.createdAt,
    signedBy: step.signedBy ?? null,
    signerRank: step.signerRank ?? null,
    signedByExpectedKey,
    expected,
    problems,
    changes,
    nullifies: step.nullifies,
    nullified: step.entry.nullified,
    deadline: deadline.toISOString(),
    msLeft: deadline.getTime() - now.getTime(),
    recovery: expected || step.entry.nullified ? null : await adviseRecovery(options, target, log, now),
  }
}

/**
 * The way back with the first recovery key that has one (planRecovery decides, over the log as
 * it is now), or the refusal most worth reading: a key of the identity's that is too weak or too
 * late says more than one that was never listed.
 */
async function adviseRecovery(
  options: WatchOptions,
  target: WatchTarget,
  log: plc.ExportedOp[],
  now: Date,
): Promise<RecoveryAdvice | null> {
  let refusal: RecoveryAdvice | null = null
  for (const key of recoveryKeys(target.expect)) {
    try {
      const plan = await planRecovery(log, key, now)
      const keyFile = options.command?.keyFile?.(key)
      const placeholders: Record<string, string> = {
        ...(!keyFile && { '<your-key-file>': `the key file of ${key}` }),
        '<new-pds-url>': 'the PDS you move to (a new account there, or a PDS that serves /recover)',
        '<signing-key-from-new-pds>': 'the did:key that PDS made for your account',
      }
      const plcFlag = options.command?.plcUrl ? ` --plc ${options.command.plcUrl}` : ''
      return {
        possible: true,
        key,
        kind: plan.kind,
        command: `pds-identity recover ${target.did} --key ${keyFile ?? '<your-key-file>'} --pds <new-pds-url> --signing-key <signing-key-from-new-pds>${plcFlag} --submit`,
        placeholders,
      }
    } catch (err) {
      if (!(err instanceof IdentityError)) throw err
      if (!refusal || (refusal.possible === false && refusal.reason === 'NoUserKey'))
        refusal = { possible: false, key, reason: err.reason, message: err.message, next: err.next }
    }
  }
  return refusal
}

function recoveryKeys(expect: WatchExpectations): string[] {
  return expect.recoveryKeys ?? expect.signers ?? []
}

function sameUrl(a: string | undefined, b: string): boolean {
  const norm = (u: string) => u.replace(/\/+$/, '').toLowerCase()
  return a !== undefined && norm(a) === norm(b)
}
