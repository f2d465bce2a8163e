import { createHash } from 'node:crypto'
import type { Keypair } from '@atproto/crypto'
import type * as plc from '@did-plc/lib'
import { type CompleteTransferInput, TransferError } from '@pds-transfer/core'
import type { AccountSource, SignedPlcOperation } from './account-source.ts'
import { isDraftTransfer } from './draft-export.ts'
import { assertSignable, type PlcChange, signTransferOperation, supersedeOperation } from './plc-operation.ts'
import type { TransferCaller } from './transfer-auth.ts'
import type { SourceTransfer, SourceTransferStore } from './transfer-store.ts'

/** Wrong PLC codes accepted per transfer before the user must have a new code sent. */
export const MAX_TOKEN_ATTEMPTS = 5

export interface SourceCompletionOptions {
  source: AccountSource
  store: SourceTransferStore
  plc: plc.Client
  rotationKey: Keypair
  /** How long a transferred account's data is kept after deactivation. */
  retentionMs: number
  /**
   * How long an account deactivated for a move may wait for the move to appear in PLC before
   * the source takes it back (supersedes the signed operation, reactivates).
   */
  reclaimAfterMs: number
  now: () => number
}

/**
 * completeTransfer on the source, as a recorded state machine (spec/completion.md):
 * `importing` → code accepted (its hash stored) → `completing` (deactivated: writes stop) →
 * head read, now final (moved since the export: 409, the account stays paused until the
 * destination has exported the rest and asks again) → operation signed and stored → `completed`. Invariant: each step is recorded before the next is taken,
 * so that a repeated call from the same client for the same transfer continues where the
 * last one stopped, and once signed always answers the same operation; and an account is
 * never left deactivated without its move reaching PLC: `reclaim` takes it back.
 */
export class SourceCompletionFlow {
  /** One completion per transfer at a time: a concurrent repeat waits, then sees the record. */
  private readonly locks = new Map<string, Promise<unknown>>()

  constructor(private readonly opts: SourceCompletionOptions) {}

  /** Answers a completeTransfer call that passed authentication: the signed operation, or a TransferError. */
  async complete(input: CompleteTransferInput, caller: TransferCaller): Promise<SignedPlcOperation> {
    const previous = this.locks.get(input.transferId) ?? Promise.resolve()
    const next = previous.catch(() => {}).then(() => this.completeOnce(input, caller))
    this.locks.set(input.transferId, next)
    try {
      return await next
    } finally {
      if (this.locks.get(input.transferId) === next) this.locks.delete(input.transferId)
    }
  }

  private async completeOnce(
    input: CompleteTransferInput,
    caller: TransferCaller,
  ): Promise<SignedPlcOperation> {
    const { source, store, now } = this.opts
    const transfer = await store.get(input.transferId)
    if (!transfer || transfer.did !== input.did || transfer.clientId !== caller.clientId) {
      throw new TransferError(
        'TransferNotFound',
        `no transfer ${input.transferId} of ${input.did} by this client`,
      )
    }
    const change: PlcChange = {
      newPdsEndpoint: input.newPdsEndpoint,
      newSigningKey: input.newSigningKey,
      newRotationKeys: input.newRotationKeys,
    }
    const signed = transfer.completion?.signedOperation
    if (signed) {
      // The same client asking again for the same move: the same answer (it already had it).
      if (sameChange(transfer.completion?.change, change)) return signed
      throw new TransferError(
        'InvalidRequest',
        `transfer ${input.transferId} was completed with other parameters`,
      )
    }
    const account = await source.getAccount(input.did)
    if (!account) throw new TransferError('AccountNotFound', `${input.did} is not hosted here`)
    // Deactivated by this very transfer (an interrupted completion, or a catch-up after the
    // freeze): go on.
    const frozenHere = transfer.completion?.deactivatedAt !== undefined && account.status === 'deactivated'
    if (transfer.status === 'completed' || (account.status !== 'active' && !frozenHere)) {
      throw new TransferError('AccountDeactivated', `${input.did} is already ${account.status}`)
    }
    if (transfer.status !== 'importing' && transfer.status !== 'completing') {
      throw new TransferError(
        'TransferNotFound',
        `transfer ${input.transferId} has no finished export (${transfer.status})`,
      )
    }
    if ((transfer.tokenFailures ?? 0) >= MAX_TOKEN_ATTEMPTS) {
      throw new TransferError(
        'RateLimitExceeded',
        `${MAX_TOKEN_ATTEMPTS} wrong codes: have a new code sent, then try it`,
      )
    }
    const tokenHash = sha256(input.plcSignatureToken)
    if (transfer.completion?.tokenHash !== tokenHash) {
      if (!(await source.consumePlcToken(input.did, input.plcSignatureToken))) {
        await store.update(transfer.transferId, {
          tokenFailures: (transfer.tokenFailures ?? 0) + 1,
          updatedAt: now(),
        })
        throw new TransferError('InvalidPlcToken', 'the PLC signature token is wrong or expired')
      }
    }
    // A change we will not sign is refused before writes stop, and the code it came with stays
    // good for a corrected request (its hash is kept): the user is not asked for another code.
    try {
      await assertSignable(this.opts.plc, input.did, this.opts.rotationKey, change)
    } catch (err) {
      if (!transfer.completion?.deactivatedAt) {
        await store.update(transfer.transferId, { completion: { tokenHash, change }, updatedAt: now() })
      }
      throw err
    }
    const completion = { tokenHash, change, deactivatedAt: transfer.completion?.deactivatedAt ?? now() }
    await store.update(transfer.transferId, {
      status: 'completing',
      completion,
      tokenFailures: 0,
      updatedAt: now(),
    })
    // Writes stop first (spec/completion.md, C9): once `deactivate` resolves no write can
    // commit any more, so the head read after it is final. A head that moved since the export
    // is answered 409 with the account kept paused: the destination fetches the last changes
    // through this transfer and completes again with the same code. One round always suffices,
    // however busy the account (before, each attempt reopened it and a busy one never finished).
    if (account.status === 'active') {
      await source.deactivate(input.did, { retainUntil: new Date(now() + this.opts.retentionMs) })
    }
    // A draft transfer pinned no rev (its data is pulled over getRepo, not tied to it, E4): the
    // destination catches up before it asks, and the head stops here (spec/dialect-draft.md).
    if (!isDraftTransfer(transfer)) await this.assertHeadUnmoved(transfer)
    let op: SignedPlcOperation
    try {
      op = await signTransferOperation(this.opts.plc, input.did, this.opts.rotationKey, change)
    } catch (err) {
      await this.giveBack(transfer, undefined)
      throw err
    }
    await store.update(transfer.transferId, {
      status: 'completed',
      completion: { ...completion, signedOperation: op },
      updatedAt: now(),
    })
    return op
  }

  /**
   * Takes back each account deactivated for a move that has not reached PLC within
   * `reclaimAfterMs`: a signed operation is first made unusable (`supersedeOperation`), then
   * the account is reactivated and its transfer returns to `importing` (the destination may
   * have a new code sent and complete again). A move that did land is marked settled.
   */
  async reclaim(): Promise<SourceTransfer[]> {
    const { store, now } = this.opts
    const reclaimed: SourceTransfer[] = []
    for (const t of await store.listUnsettled(now() - this.opts.reclaimAfterMs)) {
      const completion = t.completion
      if (!completion) continue
      const outcome = (await this.moved(t))
        ? 'moved'
        : completion.signedOperation
          ? await supersedeOperation(this.opts.plc, t.did, this.opts.rotationKey, completion.signedOperation)
          : 'superseded'
      if (outcome === 'moved') {
        await store.update(t.transferId, {
          completion: { ...completion, settledAt: now() },
          updatedAt: now(),
        })
        continue
      }
      await this.giveBack(
        t,
        'the move did not reach the PLC directory in time; the account was reactivated here',
      )
      reclaimed.push(t)
    }
    return reclaimed
  }

  /** Whether PLC names the destination of `transfer`'s completed move (it is final). */
  async moved(transfer: SourceTransfer): Promise<boolean> {
    const change = transfer.completion?.change
    if (!change) return true
    if (transfer.completion?.settledAt) return true
    const data = await this.opts.plc.getDocumentData(transfer.did)
    return data.services.atproto_pds?.endpoint === change.newPdsEndpoint
  }

  /** A new code was sent: wrong attempts start again from zero. */
  async codeSent(transferId: string): Promise<void> {
    await this.opts.store.update(transferId, { tokenFailures: 0, updatedAt: this.opts.now() })
  }

  private async assertHeadUnmoved(transfer: SourceTransfer): Promise<void> {
    const head = await this.opts.source.currentRev(transfer.did)
    if (head !== transfer.exportedRev) {
      throw new TransferError(
        'RepoChangedDuringTransfer',
        `the repo moved from rev ${transfer.exportedRev} to ${head} after the export; writes are paused now: export again (resume, same transferId), then complete again with the same code`,
      )
    }
  }

  /** Reactivates the account and returns the transfer to `importing`, its completion forgotten. */
  private async giveBack(transfer: SourceTransfer, error: string | undefined): Promise<void> {
    await this.opts.source.reactivate(transfer.did)
    await this.opts.store.update(transfer.transferId, {
      status: 'importing',
      completion: undefined,
      error,
      updatedAt: this.opts.now(),
    })
  }
}

function sameChange(a: PlcChange | undefined, b: PlcChange): boolean {
  return (
    a !== undefined &&
    a.newPdsEndpoint === b.newPdsEndpoint &&
    a.newSigningKey === b.newSigningKey &&
    a.newRotationKeys.length === b.newRotationKeys.length &&
    a.newRotationKeys.every((k, i) => k === b.newRotationKeys[i])
  )
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}
