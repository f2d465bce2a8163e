import type { BlobUse } from './account-sink.ts'
import { checkNewPassword, HeldPasswords } from './chosen-password.ts'
import { type CompletionRequest, completeWithCode } from './completion-request.ts'
import { copyFirstClient } from './copy-first-client.ts'
import { DialectPull } from './dialect-pull.ts'
import { DraftSigner } from './draft-signer.ts'
import { EngineError } from './engine-error.ts'
import { DEFAULT_LIMITS, type EngineLimits } from './engine-limits.ts'
import { FailureLedger } from './failure-ledger.ts'
import { ImportFailure } from './import-failure.ts'
import type { FailureReason, InboundTransfer } from './inbound-transfer.ts'
import { missingBlobUses, retryMissingBlobs } from './missing-blobs.ts'
import { PlainPdsSigner } from './plain-pds-signer.ts'
import { resendPlcCode } from './plc-code-resend.ts'
import { PullWorkers } from './pull-workers.ts'
import { admitRestore } from './restore-admission.ts'
import type { RestoreOperationRequest } from './restore-completion.ts'
import { type RestoreCompletion, RestoreFinish } from './restore-finish.ts'
import { checkRollbacks, type RollbackFinding } from './rollback-watch.ts'
import type { SourceClient } from './source-client.ts'
import { sourceDialect } from './source-dialect.ts'
import { admitTransfer, checkCopyAllowed, checkNewTransfer, newTransfer } from './transfer-admission.ts'
import { COMPLETION_STAGES, TransferCompletion } from './transfer-completion.ts'
import type { TransferEngineOptions } from './transfer-engine-options.ts'
import { TransferPuller } from './transfer-pull.ts'
import {
  isResumable,
  type ResumptionContext,
  recoverTransfers,
  resumeTransfer,
} from './transfer-resumption.ts'
import { catchUpV1 } from './v1-catch-up.ts'
import { V1_EXTENSIONS, V1Pull } from './v1-pull.ts'

export type { CompletionRequest } from './completion-request.ts'
export { EngineError } from './engine-error.ts'
export type { TransferEngineOptions } from './transfer-engine-options.ts'

/**
 * The receiving side's transfer engine. It only orchestrates: discover the source's dialect,
 * read the account with that dialect's reader (`DialectPull`), then complete it with the user's
 * PLC code (`TransferCompletion`: the source signs the move, we check and submit it, activate,
 * and watch for rollback). Every step is recorded in the `InboundTransferStore` before it is
 * taken, so `recover` continues any of them after a crash.
 */
export class TransferEngine {
  readonly limits: EngineLimits
  /** Wire extensions this destination asks for; its well-known document advertises them. */
  readonly extensions: readonly string[]
  /** The pulls running in this process, one worker slot each. */
  private readonly workers: PullWorkers
  /** What admitting a new transfer takes: a worker slot, then the store's atomic limits. */
  private readonly admission: Parameters<typeof admitTransfer>[0]
  /** What continuing a transfer from its record takes (`recover`, `resume`). */
  private readonly resumption: ResumptionContext
  /** The authorized source session of each transfer (kept for completion). */
  private readonly sessions = new Map<string, SourceClient>()
  /** Failures this process could not write to the store (a full disk): shown until it can. */
  private readonly failures: FailureLedger
  /** Passwords the user chose, until activation (memory only: a restart drops them). */
  private readonly passwords = new HeldPasswords()
  /** The v1 stream's puller (its getBlob reconciliation serves every dialect's "try again"). */
  private readonly puller: TransferPuller
  /** What each v1 pull of this process verified, for its catch-up. */
  private readonly v1: V1Pull
  /** The read step: each transfer's dialect's reader. */
  private readonly reading: DialectPull
  private readonly completion: TransferCompletion
  /** The end of restores: the operation to sign, its check and submission. */
  private readonly restores: RestoreFinish

  constructor(private readonly options: TransferEngineOptions) {
    this.failures = new FailureLedger(options.store)
    this.limits = {
      ...DEFAULT_LIMITS,
      ...options.limits,
      retry: { ...DEFAULT_LIMITS.retry, ...options.limits?.retry },
    }
    this.extensions = options.extensions ?? V1_EXTENSIONS
    this.workers = new PullWorkers(this.limits.maxConcurrent)
    this.admission = { store: options.store, workers: this.workers, maxPerSource: this.limits.maxPerSource }
    this.puller = new TransferPuller({
      options,
      limits: this.limits,
      running: this.workers.running,
      aborts: this.workers.aborts,
      closing: () => this.workers.closing,
    })
    this.v1 = new V1Pull({ options, extensions: this.extensions, puller: this.puller })
    this.reading = new DialectPull({
      options: { ...options, limits: this.limits },
      v1: this.v1,
      workers: this.workers,
      fail: (id, reason, message) => this.fail(id, reason, message),
    })
    const plainSigner = new PlainPdsSigner({ ...options, limits: this.limits })
    const draftSigner = new DraftSigner({ ...options, limits: this.limits })
    this.completion = new TransferCompletion({
      options,
      limits: this.limits,
      session: (id) => this.sessions.get(id),
      catchUp: (t, client, round) =>
        catchUpV1({ store: options.store, puller: this.puller, pulls: this.v1 }, t, client, round),
      fail: (id, reason, message) => this.fail(id, reason, message),
      forget: (id) => this.forget(id),
      takePassword: (id) => this.passwords.take(id),
      signer: (t) => (t.dialect === 'plain' ? plainSigner : t.dialect === 'draft' ? draftSigner : undefined),
    })
    this.resumption = {
      options,
      failures: this.failures,
      running: (id) => this.workers.entry(id) !== undefined,
      assertFree: () => this.workers.assertFree(),
      attach: (id, client) => this.attach(id, client),
      continueCompletion: (id) => this.completion.run(id),
      fail: (id, reason, message) => this.fail(id, reason, message),
      resumePull: (t, client, signingKey, handle) => this.launch(t, client, signingKey, handle, true),
    }
    this.restores = new RestoreFinish({
      options,
      completion: this.completion,
      holdPassword: (id, password) => this.passwords.hold(id, password),
      checkPassword: (password) => checkNewPassword(options.sink, password),
    })
  }

  /**
   * Checks limits and the account, records a new transfer and starts pulling it in the
   * background. Returns the record as created; follow it with `get` or `wait`. The per-source
   * and one-per-DID limits are checked by the store in the same atomic step that records the
   * transfer, so concurrent starts (or workers sharing the store) cannot both pass them.
   */
  async start(params: {
    did: string
    client: SourceClient
    /**
     * A copy of the account to read the repo and blobs from instead of its PDS (a backup's read
     * API, an export: `copyFirstClient`); the PDS still gives what the copy lacks, the writes since,
     * and the identity step. Only for a PDS without the v1 stream, whose own stream is faster.
     */
    copy?: SourceClient
  }): Promise<InboundTransfer> {
    const { did, client, copy } = params
    // A failure shown but not yet stored (the disk was full) still holds the DID in the store.
    await this.failures.flush()
    const dialect = await sourceDialect(client.url, did)
    if (copy) checkCopyAllowed(dialect, client.url)
    const identity = await checkNewTransfer(this.options, did, client.url)
    const transfer: InboundTransfer = {
      ...newTransfer(did, client.url),
      ...(dialect !== 'v1' && { dialect }),
      ...(copy && { copyUrl: copy.url }),
    }
    await admitTransfer(this.admission, transfer)
    this.launch(transfer, client, identity.signingKey, identity.handle, false, copy)
    return transfer
  }

  /**
   * Starts restoring an account from a copy of its data (`client`: a backup read API, or any
   * getRepo/getBlob endpoint; `restoreSourceClient`) while its old PDS is gone or hostile: the
   * user's rotation key `userKey` (a public did:key) must be able to take the identity back,
   * which is checked over PLC's log first (`RestoreRefusal` says why not, and what is left).
   * The copy is pulled and verified as a move from a plain PDS is, against the signing key of
   * the state the recovery returns to, and the transfer waits at `awaitingRecovery` for the
   * operation the user signs (`restoreOperation`, then `completeRestore`).
   */
  async startRestore(params: {
    did: string
    client: SourceClient
    userKey: string
  }): Promise<InboundTransfer> {
    const { did, client, userKey } = params
    await this.failures.flush()
    const restore = await admitRestore(this.options, did, userKey, this.options.clock?.())
    const transfer: InboundTransfer = { ...newTransfer(did, client.url), dialect: 'restore', restore }
    await admitTransfer(this.admission, transfer)
    this.launch(transfer, client, restore.repoSigningKey, restore.handle, false)
    return transfer
  }

  /**
   * What the user signs to finish a restore: the PLC operation that points the identity here,
   * planned over PLC's log as it is now (`RestoreFinish.operation`).
   */
  async restoreOperation(transferId: string): Promise<RestoreOperationRequest> {
    return this.restores.operation(transferId)
  }

  /**
   * Finishes a restore with the user's signed operation, or once PLC already names this server
   * (`RestoreFinish.complete`); called again after an interruption, it continues from the
   * recorded step.
   */
  async completeRestore(transferId: string, params: RestoreCompletion = {}): Promise<InboundTransfer> {
    return this.restores.complete(transferId, params)
  }

  /** Runs a pull in the background, in a worker slot. */
  private launch(
    transfer: InboundTransfer,
    client: SourceClient,
    signingKey: string,
    handle: string | undefined,
    resumed: boolean,
    /** The data is read from this copy first; completion still talks to `client` only. */
    copy?: SourceClient,
  ): void {
    this.sessions.set(transfer.transferId, client)
    const reader = copy ? copyFirstClient(copy, client) : client
    this.workers.launch(transfer.transferId, (entry) =>
      this.reading.run(transfer, reader, signingKey, handle, resumed, entry),
    )
  }

  /** The current record of a transfer. */
  async get(transferId: string): Promise<InboundTransfer | undefined> {
    return this.failures.shown(transferId) ?? this.options.store.get(transferId)
  }

  /** Resolves when the background pull (or completion) of `transferId` has ended (either way). */
  async wait(transferId: string): Promise<InboundTransfer> {
    await this.workers.entry(transferId)?.done
    await this.completion.settled(transferId)
    const t = await this.get(transferId)
    if (!t) throw new EngineError('TransferNotFound', `no transfer ${transferId}`)
    return t
  }

  /**
   * After a restart: each transfer that was pulling resumes from what this destination had
   * verified and committed (decision 7), if `restoreClient` can give it an authorized client
   * again; otherwise it is marked `Interrupted` rather than left hanging. A transfer that was
   * completing continues from its recorded step in the background (never pulled again);
   * transfers waiting for the PLC token get their client back. Returns the transfers it looked at.
   */
  async recover(): Promise<InboundTransfer[]> {
    return recoverTransfers(this.resumption)
  }

  /**
   * Stops every running pull without failing it (a shutdown): its record stays as it was, so
   * the next process's `recover` resumes it.
   */
  async close(): Promise<void> {
    await this.workers.close()
  }

  /**
   * Completes a transfer waiting for its PLC token: stores the code and the requested rotation
   * keys, then runs completion (the source signs the move, we check and submit it, activate,
   * and start the rollback watch). With blobs still missing it refuses unless
   * `acceptMissingBlobs` (the user saw the list). `userRotationKey` (a `did:key` the user holds)
   * is put first in the new rotation keys, so the user can override any server for the 72-hour
   * window (0014 "Adversarial Migration"). Called on a transfer whose completion was
   * interrupted, it continues from the recorded step; on a completed one it returns it.
   */
  async complete(transferId: string, params: CompletionRequest): Promise<InboundTransfer> {
    const { completion, sessions, passwords } = this
    return completeWithCode({ ...this.options, completion, sessions, passwords }, transferId, params)
  }

  /**
   * Asks the source to email the user a fresh PLC token (extension `plc-token-refresh`), for a
   * token that expired or never arrived. Throws `SourceError` when the source refuses (e.g.
   * `RateLimitExceeded`) and `EngineError` when it cannot do it at all.
   */
  async requestPlcToken(transferId: string): Promise<void> {
    const t = await this.stored(transferId)
    return resendPlcCode(this.options.store, t, this.sessions.get(transferId))
  }

  /**
   * Checks each completed transfer inside its watch window with the identity watcher: the first
   * operation since the move that no longer names us with the account's key, or that a key the
   * identity did not have signed, is recorded as a rollback (who signed it, the deadline, the way
   * back). A DID PLC did not answer for goes to `onFailure` and is checked again next time.
   */
  async checkRollbacks(
    now: number = Date.now(),
    onFailure?: (failure: { did: string; message: string }) => void,
  ): Promise<RollbackFinding[]> {
    return checkRollbacks(this.options, now, onFailure)
  }

  /**
   * The move of `did` to this server that has neither finished nor failed, if any: a user who
   * signs in again (a closed tab, another device) is taken back to it instead of a second one.
   */
  async unfinished(did: string): Promise<InboundTransfer | undefined> {
    return (await this.options.store.listActive()).find((t) => t.did === did)
  }

  /**
   * The newest transfer of `did` that failed in a way the user can resume from (RESUMABLE): a
   * sign-in after the source came back, or after space was freed, continues it.
   */
  async resumable(did: string): Promise<InboundTransfer | undefined> {
    const [newest] = await this.options.store.listForDid(did)
    return newest && isResumable(newest) ? newest : undefined
  }

  /**
   * Resumes a transfer that failed by connection or local storage, under the same transferId,
   * from what this destination had verified and committed (decision 7). The store's one-per-DID
   * rule still holds: refused while another transfer of the DID is in flight.
   */
  async resume(transferId: string, client: SourceClient): Promise<InboundTransfer> {
    await this.failures.flush()
    return resumeTransfer(this.resumption, await this.stored(transferId), client)
  }

  /**
   * Cancels a move the user no longer wants, before their identity is asked to change: a
   * running pull stops at once (its stream aborted), a waiting one is closed; the transfer ends
   * `failed`/`Cancelled`. Refused once completion has begun (the source may have signed).
   */
  async cancel(transferId: string): Promise<InboundTransfer> {
    const t = await this.stored(transferId)
    if (t.status === 'completed' || t.status === 'failed') return t
    if (COMPLETION_STAGES.has(t.stage)) {
      throw new EngineError(
        'InvalidState',
        'the move is already changing your identity; it cannot be cancelled now',
      )
    }
    const cancelled = new ImportFailure('Cancelled', 'you cancelled this move')
    await this.workers.cancel(transferId, cancelled)
    const now = await this.options.store.get(transferId)
    // A pull that had just finished (or none was running): recorded here.
    return now?.status === 'failed' ? now : this.fail(transferId, 'Cancelled', cancelled.message)
  }

  /** Gives an unfinished transfer the source session of a fresh sign-in (the old one may be gone). */
  attach(transferId: string, client: SourceClient): void {
    this.sessions.set(transferId, client)
  }

  /** Which records use the blobs still missing from a transfer (empty where the sink cannot tell). */
  async missingBlobUses(transferId: string): Promise<BlobUse[]> {
    return missingBlobUses(this.options, transferId)
  }

  /**
   * Fetches the blobs still missing from a transfer waiting for its code once more (the user's
   * "try those again", e.g. after the source's operator restored them). Returns the record.
   */
  async retryMissingBlobs(transferId: string): Promise<InboundTransfer> {
    const t = await this.stored(transferId)
    return retryMissingBlobs(
      { store: this.options.store, puller: this.puller },
      t,
      this.sessions.get(transferId),
    )
  }

  /** Whether this destination's sink can set a password the user chooses in /migrate. */
  get canSetPassword(): boolean {
    return this.options.sink.setPassword !== undefined
  }

  /** Records that the user set their password after the move (through the PDS's reset flow). */
  async notePasswordChosen(transferId: string): Promise<InboundTransfer> {
    return this.options.store.update(transferId, { passwordChosen: true })
  }

  /** The stored record of a transfer; `TransferNotFound` if there is none. */
  private async stored(transferId: string): Promise<InboundTransfer> {
    const t = await this.options.store.get(transferId)
    if (!t) throw new EngineError('TransferNotFound', `no transfer ${transferId}`)
    return t
  }

  /** Drops what this process held for a transfer that has ended. */
  private forget(transferId: string): void {
    this.v1.forget(transferId)
    this.sessions.delete(transferId)
  }

  /** Records a failure, best-effort (FailureLedger), and drops what this process held for it. */
  private async fail(transferId: string, reason: FailureReason, message: string): Promise<InboundTransfer> {
    this.forget(transferId)
    return this.failures.fail(transferId, reason, message)
  }
}
