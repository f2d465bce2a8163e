/**
 * Continuing transfers from their records (decision 7): after a restart (a crash, a SIGKILL)
 * every transfer an earlier process left active, and on the user's word one that failed in a
 * resumable way (the connection, our disk). After a restart the half-written files and staged
 * blocks of dead writers are swept first; a pull then resumes from what was verified and
 * committed here with a source session `restoreClient` gives back (failed `Interrupted` when
 * there is none), a completion continues from its recorded stage, and a transfer waiting for
 * the user gets its session back.
 *
 * Invariant: nothing verified is pulled again and a completion is never started over; no
 * transfer is left hanging: each ends resumed, continuing, waiting for the user, or failed by
 * name, and one record that cannot be written does not keep the others from resuming.
 */
import type { AccountSink } from './account-sink.ts'
import type { DidResolver } from './did-resolver.ts'
import { EngineError } from './engine-error.ts'
import type { FailureLedger } from './failure-ledger.ts'
import type { FailureReason, InboundTransfer, InboundTransferStore } from './inbound-transfer.ts'
import { isRestore } from './restore-admission.ts'
import type { SourceClient } from './source-client.ts'
import { COMPLETION_STAGES, normalizeUrl } from './transfer-completion.ts'
import { RESUMABLE, toFailure } from './transfer-failure.ts'

/** What resuming needs of the engine. */
export interface ResumptionContext {
  options: {
    sink: AccountSink
    store: InboundTransferStore
    resolver: DidResolver
    restoreClient?: (transfer: InboundTransfer) => Promise<SourceClient | undefined>
  }
  failures: FailureLedger
  /** Whether this process already runs a pull of the transfer. */
  running(transferId: string): boolean
  /** Throws `EngineError('LimitExceeded')` when every worker slot is taken. */
  assertFree(): void
  /** Gives the transfer its source session again. */
  attach(transferId: string, client: SourceClient): void
  /** Continues the transfer's completion from its recorded stage. */
  continueCompletion(transferId: string): Promise<InboundTransfer>
  fail(transferId: string, reason: FailureReason, message: string): Promise<InboundTransfer>
  /** Launches a resumed pull in the background. */
  resumePull(t: InboundTransfer, client: SourceClient, signingKey: string, handle: string | undefined): void
}

/** Continues every active transfer of the store; returns each as it now stands. */
export async function recoverTransfers(ctx: ResumptionContext): Promise<InboundTransfer[]> {
  await ctx.failures.flush()
  // A process killed mid-blob or mid-repo left temporary files and staged blocks that no
  // abort will ever remove; swept before a pull resumes (each resumed unit starts afresh).
  await ctx.options.sink.sweepUnfinished?.()
  const seen: InboundTransfer[] = []
  for (const t of await ctx.options.store.listActive()) {
    if (ctx.running(t.transferId) || ctx.failures.shown(t.transferId)) continue
    try {
      seen.push(await recoverOne(ctx, t))
    } catch (err) {
      seen.push(await ctx.fail(t.transferId, toFailure(err).reason, toFailure(err).message))
    }
  }
  return seen
}

/** What recovery does with one active transfer; returns it as it now stands. */
async function recoverOne(ctx: ResumptionContext, t: InboundTransfer): Promise<InboundTransfer> {
  const client = await ctx.options.restoreClient?.(t).catch(() => undefined)
  if (client) ctx.attach(t.transferId, client)
  // Waiting for the user (a code, or a restore's signed operation) needs no session of ours.
  if (t.stage === 'awaitingPlcToken' || t.stage === 'awaitingRecovery') return t
  if (COMPLETION_STAGES.has(t.stage)) {
    // Errors land on the record (back to the code step, or failed); the next `complete` retries.
    ctx.continueCompletion(t.transferId).catch(() => {})
    return t
  }
  if (!client) return ctx.fail(t.transferId, 'Interrupted', 'the destination restarted during the transfer')
  // Recorded before the pull is launched: a store that cannot write leaves nothing running.
  const retrying = await ctx.options.store.update(t.transferId, { stage: 'retrying' })
  const identity = await ctx.options.resolver.resolve(t.did)
  ctx.resumePull(retrying, client, identity.signingKey, identity.handle)
  return retrying
}

/** Whether `t` failed in a way the user can resume from (RESUMABLE: the connection, our disk). */
export function isResumable(t: InboundTransfer): boolean {
  return t.status === 'failed' && t.failure !== undefined && RESUMABLE.has(t.failure.reason)
}

/**
 * Resumes `t`, which failed in a resumable way, under the same transferId with `client` (a
 * fresh sign-in at the source). The store's one-per-DID rule still holds.
 */
export async function resumeTransfer(
  ctx: ResumptionContext,
  t: InboundTransfer,
  client: SourceClient,
): Promise<InboundTransfer> {
  if (!isResumable(t)) {
    throw new EngineError(
      'InvalidState',
      `transfer ${t.transferId} is ${t.status}/${t.stage}: nothing to resume`,
    )
  }
  ctx.assertFree()
  // A restore's source is a copy, not the PDS the DID names; its keys were fixed at admission.
  const identity = isRestore(t)
    ? { signingKey: t.restore.repoSigningKey, handle: t.restore.handle }
    : await ctx.options.resolver.resolve(t.did)
  if (!isRestore(t) && 'pds' in identity && normalizeUrl(identity.pds) !== normalizeUrl(client.url)) {
    throw new EngineError('SourceMismatch', `${t.did} is hosted at ${identity.pds}, not ${client.url}`)
  }
  const retrying = await ctx.options.store.update(t.transferId, {
    status: 'importing',
    stage: 'retrying',
    failure: undefined,
  })
  ctx.resumePull(retrying, client, identity.signingKey, identity.handle)
  return retrying
}
