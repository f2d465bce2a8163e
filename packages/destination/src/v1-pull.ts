/**
 * The pull of a v1 (0014 HPKE stream) transfer as the engine runs it: the suite negotiated over
 * the source's well-known, the account created deactivated here, export sessions streamed with
 * retries and resume (`TransferPuller`), then reconciliation and the wait for the code.
 *
 * Invariant: what a pull verified is kept per transfer for its catch-up (`held`), and is never
 * less than what the store records as committed here: after a restart it is rebuilt from the
 * record (repo head, referenced blobs, blob cursor), so nothing verified is pulled again.
 */
import { commonExtensions, EXTENSION, selectAlgorithm } from '@pds-transfer/core'
import type { AccountSink } from './account-sink.ts'
import type { DidResolver } from './did-resolver.ts'
import { ImportFailure } from './import-failure.ts'
import { emptyProgress, type InboundTransfer, type InboundTransferStore } from './inbound-transfer.ts'
import type { KeyRing } from './key-ring.ts'
import type { VerifiedRepo } from './repo-verifier.ts'
import type { SourceClient } from './source-client.ts'
import type { PullSession, PullState, TransferPuller } from './transfer-pull.ts'

/** The wire extensions a destination asks v1 sources for by default: all it implements (spec/extensions.md). */
export const V1_EXTENSIONS: readonly string[] = [
  EXTENSION.endManifest,
  EXTENSION.resume,
  EXTENSION.sizeHint,
  EXTENSION.repoDiff,
]

/** One pull of this process: its fixed parameters and what it verified so far. */
export interface HeldPull {
  session: PullSession
  state: PullState
}

/** What the v1 pull needs of the engine. */
export interface V1PullContext {
  options: { sink: AccountSink; store: InboundTransferStore; keys: KeyRing; resolver: DidResolver }
  /** Wire extensions this destination asks for. */
  extensions: readonly string[]
  puller: TransferPuller
}

export class V1Pull {
  /** What each pull of this process verified, for resume and catch-up. */
  private readonly pulls = new Map<string, HeldPull>()

  constructor(private readonly ctx: V1PullContext) {}

  /**
   * Pulls `transfer` to `awaitingPlcToken`; `resumed` continues from what the record says is
   * held. Throws what ended the pull (the engine records it, or leaves a shutdown to `recover`).
   */
  async run(
    transfer: InboundTransfer,
    client: SourceClient,
    signingKey: string,
    handle: string | undefined,
    resumed: boolean,
    entry: PullSession['entry'],
  ): Promise<void> {
    const { transferId, did } = transfer
    const { sink, store, keys } = this.ctx.options
    const state: PullState = resumed
      ? await this.persistedState(transfer)
      : { progress: emptyProgress(), repo: undefined, blobCursor: undefined }
    const wellKnown = await this.ctx.puller.sourceWellKnown(client.url)
    const algorithm = selectAlgorithm(keys.algorithms, wellKnown.algorithms)
    if (!algorithm) {
      throw new ImportFailure(
        'NoCommonAlgorithm',
        `source offers ${wellKnown.algorithms.join(', ')}; we speak ${keys.algorithms.join(', ')}`,
      )
    }
    const accountKey = await sink.createDeactivatedAccount(did, handle === undefined ? {} : { handle })
    await store.update(transferId, {
      sourceDid: wellKnown.did,
      algorithm,
      signingKey: accountKey.signingKey,
      status: 'exporting',
      stage: 'streaming',
    })
    const session: PullSession = {
      transferId,
      did,
      client,
      signingKey,
      algorithm,
      extensions: commonExtensions(this.ctx.extensions, wellKnown.extensions),
      entry,
    }
    this.pulls.set(transferId, { session, state })
    await this.ctx.puller.streamWithRetries(session, state)
    await this.ctx.puller.finishImport(session, state)
  }

  /** What this process holds of a transfer's pull; after a restart, rebuilt from its record. */
  async held(t: InboundTransfer, client: SourceClient): Promise<HeldPull> {
    return this.pulls.get(t.transferId) ?? this.rebuild(t, client)
  }

  /** Drops what this process held for a transfer that has ended. */
  forget(transferId: string): void {
    this.pulls.delete(transferId)
  }

  /** The pull of a transfer this process did not start (a restart): its session and state again. */
  private async rebuild(t: InboundTransfer, client: SourceClient): Promise<HeldPull> {
    const wellKnown = await this.ctx.puller.sourceWellKnown(client.url)
    const identity = await this.ctx.options.resolver.resolve(t.did)
    if (!t.algorithm) throw new ImportFailure('StreamInvalid', 'the transfer has no negotiated algorithm')
    const pull = {
      session: {
        transferId: t.transferId,
        did: t.did,
        client,
        signingKey: identity.signingKey,
        algorithm: t.algorithm as PullSession['algorithm'],
        extensions: commonExtensions(this.ctx.extensions, wellKnown.extensions),
        entry: { bytes: t.progress.bytesReceived },
      },
      state: await this.persistedState(t),
    }
    this.pulls.set(t.transferId, pull)
    return pull
  }

  /** What an earlier process had verified and committed for a transfer. */
  private async persistedState(t: InboundTransfer): Promise<PullState> {
    const repo: VerifiedRepo | undefined = t.repo && {
      commitCid: t.repo.commitCid,
      rev: t.repo.rev,
      records: t.progress.records,
      blobCids: new Set(await this.ctx.options.store.getReferencedBlobs(t.transferId)),
    }
    return { progress: { ...t.progress }, repo, blobCursor: t.blobCursor }
  }
}
