/**
 * The read step of a transfer: its dialect's reader, run in the background for the engine. A
 * source read over the sync endpoints (a plain PDS, a draft source, a restore's copy) goes to
 * `PlainPdsReader` or `DraftReader`, which record their own failures and resume from the record;
 * a v1 source goes to `V1Pull`.
 *
 * Invariant: a pull ends with its outcome on the record (`awaitingPlcToken`/`awaitingRecovery`,
 * or `failed` by name), except for a stop that is the engine's: a cancellation, recorded by
 * `cancel`, or a shutdown, whose record is left as it stands for the next process's `recover`.
 */
import { DraftReader } from './draft-reader.ts'
import type { EngineLimits } from './engine-limits.ts'
import type { FailureReason, InboundTransfer } from './inbound-transfer.ts'
import { type ExtraUnits, PlainPdsReader, type PlainPdsReaderOptions } from './plain-pds-reader.ts'
import { pullPlainPermissionedData } from './plain-space-pull.ts'
import type { PullWorkers } from './pull-workers.ts'
import type { SourceClient } from './source-client.ts'
import type { PermissionedDataSink } from './space-sink.ts'
import { toFailure } from './transfer-failure.ts'
import type { PullSession } from './transfer-pull.ts'
import type { V1Pull } from './v1-pull.ts'

/** What the read step needs of the engine. */
export interface DialectPullContext {
  /** What the sync readers are built with (the engine's options and limits, its permissioned-data sink). */
  options: PlainPdsReaderOptions & { limits: EngineLimits; spaces?: PermissionedDataSink }
  v1: V1Pull
  /** The worker slots: their aborts stop the readers on shutdown. */
  workers: Pick<PullWorkers, 'aborts' | 'closing'>
  /** Records a failure by name (best-effort) and drops what the engine held for the transfer. */
  fail(transferId: string, reason: FailureReason, message: string): Promise<InboundTransfer>
}

export class DialectPull {
  private readonly plain: PlainPdsReader
  private readonly draft: DraftReader

  constructor(private readonly ctx: DialectPullContext) {
    this.plain = new PlainPdsReader(ctx.options)
    this.draft = new DraftReader({ ...ctx.options, plain: this.plain })
  }

  /**
   * Pulls `transfer` from `client` with its dialect's reader; `entry` is its running entry (the
   * abort a cancellation or shutdown uses). `signingKey`, `handle` and `resumed` are the v1 pull's:
   * the sync readers take them from the record.
   */
  async run(
    transfer: InboundTransfer,
    client: SourceClient,
    signingKey: string,
    handle: string | undefined,
    resumed: boolean,
    entry: PullSession['entry'],
  ): Promise<void> {
    const { transferId } = transfer
    if (transfer.dialect === 'plain' || transfer.dialect === 'restore' || transfer.dialect === 'draft') {
      const abort = new AbortController()
      entry.abort = abort
      this.ctx.workers.aborts.add(abort)
      if (entry.cancel) abort.abort(entry.cancel)
      try {
        if (transfer.dialect === 'draft') await this.draft.pull(transferId, client, { signal: abort.signal })
        else await this.plain.pull(transferId, client, { signal: abort.signal, ...this.plainExtra(transfer) })
      } catch (err) {
        if (this.ctx.workers.closing || entry.cancel) return
        const failure = toFailure(err)
        await this.ctx.fail(transferId, failure.reason, failure.message)
      } finally {
        this.ctx.workers.aborts.delete(abort)
      }
      return
    }
    try {
      await this.ctx.v1.run(transfer, client, signingKey, handle, resumed, entry)
    } catch (err) {
      // A shutdown leaves the record as it is, for the next process to resume.
      if (this.ctx.workers.closing) return
      const failure = toFailure(err)
      await this.ctx.fail(transferId, failure.reason, failure.message)
    }
  }

  /**
   * A plain source's permissioned data, probed for (spec/permissioned-data.md, "From a plain
   * PDS") when this destination has a sink for it; a restore reads a copy, not a PDS: not probed.
   */
  private plainExtra(transfer: InboundTransfer): { extra?: ExtraUnits } {
    const { spaces, sink, limits } = this.ctx.options
    if (!spaces || transfer.dialect !== 'plain') return {}
    return {
      extra: ({ did, signingKey, client }) =>
        pullPlainPermissionedData(spaces, { client, did, signingKey, blobs: sink, limits }),
    }
  }
}
