/**
 * The catch-up of a v1 move (decision 6): the source refused to sign because its head moved
 * since our export, so a resumed export brings what was written since (the new CAR, or a diff
 * with `repo-diff`; blobs past our cursor), then the referenced blobs are reconciled.
 *
 * Invariant: the transfer ends either caught up (repo head, missing blobs and the bytes it cost
 * recorded) or back at `awaitingPlcToken` with the reason and the code dropped, the user's next
 * action; never in between.
 */
import { EngineError } from './engine-error.ts'
import { blobsMissing } from './import-failure.ts'
import type { InboundTransfer, InboundTransferStore } from './inbound-transfer.ts'
import type { VerifiedRepo } from './repo-verifier.ts'
import type { SourceClient } from './source-client.ts'
import { toFailure } from './transfer-failure.ts'
import type { TransferPuller } from './transfer-pull.ts'
import type { V1Pull } from './v1-pull.ts'

/** What the catch-up needs of the engine. */
export interface V1CatchUpContext {
  store: InboundTransferStore
  puller: TransferPuller
  pulls: V1Pull
}

/** Imports what was written on the source since our export (round `round` of the completion). */
export async function catchUpV1(
  ctx: V1CatchUpContext,
  t: InboundTransfer,
  client: SourceClient,
  round: number,
): Promise<void> {
  const { store, puller } = ctx
  const { transferId } = t
  await store.update(transferId, { status: 'importing', stage: 'catchingUp', catchUps: round })
  try {
    const pull = await ctx.pulls.held(t, client)
    const session = { ...pull.session, client }
    const before = { repo: pull.state.repoBytes ?? 0, total: pull.state.progress.bytesReceived }
    await puller.streamWithRetries(session, pull.state)
    const spent = (await store.get(transferId))?.catchUpBytes ?? { repo: 0, total: 0 }
    await store.update(transferId, {
      catchUpBytes: {
        repo: spent.repo + (pull.state.repoBytes ?? 0) - before.repo,
        total: spent.total + pull.state.progress.bytesReceived - before.total,
      },
    })
    const repo = pull.state.repo as VerifiedRepo
    const missing = await puller.reconcile(transferId, t.did, client, repo.blobCids, pull.state.progress)
    await store.update(transferId, {
      repo: { rev: repo.rev, commitCid: repo.commitCid },
      missingBlobs: missing,
      progress: { ...pull.state.progress, blobsMissing: missing.length },
    })
    const accepted = (await store.get(transferId))?.completion?.acceptMissingBlobs === true
    if (missing.length > 0 && !accepted) {
      throw blobsMissing(missing)
    }
  } catch (err) {
    const failure = toFailure(err)
    await store.update(transferId, {
      status: 'importing',
      stage: 'awaitingPlcToken',
      completion: undefined,
      failure,
    })
    throw new EngineError('InvalidState', `catching up with the source failed: ${failure.message}`)
  }
}
