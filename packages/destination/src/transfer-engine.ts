import type * as plc from '@did-plc/lib'
import { commonExtensions, EXTENSION, NSID, selectAlgorithm } from '@pds-transfer/core'
import type { AccountSink, BlobUse } from './account-sink.ts'
import { copyFirstClient } from './copy-first-client.ts'
import type { DidResolver } from './did-resolver.ts'
import { DraftReader } from './draft-reader.ts'
import { DraftSigner } from './draft-signer.ts'
import { EngineError } from './engine-error.ts'
import { DEFAULT_LIMITS, type EngineLimits } from './engine-limits.ts'
import { FailureLedger } from './failure-ledger.ts'
import { blobsMissing, ImportFailure } from './import-failure.ts'
import {
  emptyProgress,
  type FailureReason,
  type InboundTransfer,
  type InboundTransferStore,
} from './inbound-transfer.ts'
import type { KeyRing } from './key-ring.ts'
import { PlainPdsReader } from './plain-pds-reader.ts'
import { PlainPdsSigner, requestPlainPlcCode } from './plain-pds-signer.ts'
import type { VerifiedRepo } from './repo-verifier.ts'
import { admitRestore, isRestore } from './restore-admission.ts'
import type { RestoreOperationRequest } from './restore-completion.ts'
import { type RestoreCompletion, RestoreFinish } from './restore-finish.ts'
import { checkRollbacks, type RollbackFinding } from './rollback-watch.ts'
import { moveRotationKeys, RotationKeyError } from './rotation-keys.ts'
import { type SourceClient, SourceError } from './source-client.ts'
import { sourceDialect } from './source-dialect.ts'
import { sourceHeadRev } from './source-head.ts'
import { checkNewTransfer, newTransfer, refusalError } from './transfer-admission.ts'
import { COMPLETION_STAGES, normalizeUrl, TransferCompletion } from './transfer-completion.ts'
import { RESUMABLE, toFailure } from './transfer-failure.ts'
import { type PullSession, type PullState, TransferPuller } from './transfer-pull.ts'

export { EngineError } from './engine-error.ts'

export interface TransferEngineOptions {
  sink: AccountSink
  store: InboundTransferStore
  keys: KeyRing
  resolver: DidResolver
  plc: plc.Client
  /** Our public PDS URL: the new `atproto_pds` endpoint. */
  serviceUrl: string
  /** Our PLC rotation key (`did:key`), added to the account's rotation keys. */
  rotationKey: string
  limits?: Partial<EngineLimits>
  /** Hours to watch the PLC log for a rollback after completion (72). */
  watchHours?: number
  /**
   * Wire extensions we ask sources for when they advertise them (spec/extensions.md; default:
   * all we implement). `[]` makes this a literal 0014 destination, for interoperability tests.
   */
  extensions?: string[]
  /**
   * After a restart: an authorized client for a transfer's source (e.g. from a durable OAuth
   * session store), so that `recover` resumes the transfer instead of marking it Interrupted.
   */
  restoreClient?: (transfer: InboundTransfer) => Promise<SourceClient | undefined>
  /** The time a restore's 72-hour window is judged at (default: this machine's clock; tests move it). */
  clock?: () => Date
}

/**
 * The receiving side's transfer engine: pulls an account from its source (`TransferPuller`),
 * then completes it with the user's PLC token (`TransferCompletion`: the source signs the move,
 * we check and submit it, activate, and watch for rollback). Every step is recorded in the
 * `InboundTransferStore` before it is taken, so `recover` continues any of them after a crash.
 */
/** The reference PDS's bounds for a new password (its NEW_PASSWORD_MAX_LENGTH is 256). */
const MIN_PASSWORD = 8
const MAX_PASSWORD = 256

export class TransferEngine {
  readonly limits: EngineLimits
  /** Wire extensions this destination asks for; its well-known document advertises them. */
  readonly extensions: readonly string[]
  private readonly running = new Map<string, PullSession['entry'] & { done: Promise<void> }>()
  /** The authorized source session of each transfer (kept for completion). */
  private readonly sessions = new Map<string, SourceClient>()
  /** What each pull of this process verified, for resume and catch-up. */
  private readonly pulls = new Map<string, { session: PullSession; state: PullState }>()
  /** Export sessions in flight, to stop them on `close`. */
  private readonly aborts = new Set<AbortController>()
  /** Failures this process could not write to the store (a full disk): shown until it can. */
  private readonly failures: FailureLedger
  /** Passwords the user chose, until activation (memory only: a restart drops them). */
  private readonly passwords = new Map<string, string>()
  private closing = false
  private readonly puller: TransferPuller
  /** The reader of plain PDSes (no transfer endpoints): the sync endpoints, then PlainPdsSigner. */
  private readonly plain: PlainPdsReader
  /** The reader of sources serving the current draft: its exportAccount, then the plain reader. */
  private readonly draft: DraftReader
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
    this.extensions = options.extensions ?? [
      EXTENSION.endManifest,
      EXTENSION.resume,
      EXTENSION.sizeHint,
      EXTENSION.repoDiff,
    ]
    this.puller = new TransferPuller({
      options,
      limits: this.limits,
      running: this.running,
      aborts: this.aborts,
      closing: () => this.closing,
    })
    const plainSigner = new PlainPdsSigner({ ...options, limits: this.limits })
    this.plain = new PlainPdsReader({ ...options, limits: this.limits })
    const draftSigner = new DraftSigner({ ...options, limits: this.limits })
    this.draft = new DraftReader({ ...options, limits: this.limits, plain: this.plain })
    this.completion = new TransferCompletion({
      options,
      limits: this.limits,
      session: (id) => this.sessions.get(id),
      catchUp: (t, client, round) => this.catchUp(t, client, round),
      fail: (id, reason, message) => this.fail(id, reason, message),
      forget: (id) => this.forget(id),
      takePassword: (id) => {
        const password = this.passwords.get(id)
        this.passwords.delete(id)
        return password
      },
      signer: (t) => (t.dialect === 'plain' ? plainSigner : t.dialect === 'draft' ? draftSigner : undefined),
    })
    this.restores = new RestoreFinish({
      options,
      completion: this.completion,
      holdPassword: (id, password) => {
        if (password) this.passwords.set(id, password)
        else this.passwords.delete(id)
      },
      checkPassword: (password) => this.checkPassword(password),
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
    if (copy && dialect !== 'plain')
      throw new EngineError(
        'InvalidState',
        dialect === 'v1'
          ? `${client.url} streams the whole account itself, faster than any copy; move without one`
          : `${client.url} serves the transfer draft; a copy is read only for a plain PDS: move without one`,
      )
    const identity = await checkNewTransfer(this.options, did, client.url)
    const transfer: InboundTransfer = {
      ...newTransfer(did, client.url),
      ...(dialect !== 'v1' && { dialect }),
      ...(copy && { copyUrl: copy.url }),
    }
    await this.record(transfer)
    this.launch(transfer, client, identity.signingKey, identity.handle, false, copy)
    return transfer
  }

  /**
   * Takes a worker slot and records a new transfer, or refuses it: the worker limit is this
   * process's own (checked and taken with no await between); the per-source and one-per-DID
   * limits are the store's, checked in the same atomic step that records it.
   */
  private async record(transfer: InboundTransfer): Promise<void> {
    if (this.running.size >= this.limits.maxConcurrent) {
      throw new EngineError('LimitExceeded', `${this.running.size} transfers are running; try again later`)
    }
    this.running.set(transfer.transferId, { bytes: 0, done: Promise.resolve() })
    const release = () => this.running.delete(transfer.transferId)
    const refusal = await this.options.store
      .create(transfer, { source: normalizeUrl(transfer.sourceUrl), maxPerSource: this.limits.maxPerSource })
      .catch((err: unknown) => {
        release()
        throw err
      })
    if (refusal) {
      release()
      throw refusalError(refusal, transfer.did, transfer.sourceUrl)
    }
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
    await this.record(transfer)
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

  /** Runs a pull in the background, tracked in `running`. */
  private launch(
    transfer: InboundTransfer,
    client: SourceClient,
    signingKey: string,
    handle: string | undefined,
    resumed: boolean,
    /** The data is read from this copy first; completion still talks to `client` only. */
    copy?: SourceClient,
  ): void {
    const entry = { bytes: 0, done: Promise.resolve() }
    this.running.set(transfer.transferId, entry)
    this.sessions.set(transfer.transferId, client)
    const reader = copy ? copyFirstClient(copy, client) : client
    entry.done = this.pull(transfer, reader, signingKey, handle, resumed).finally(() =>
      this.running.delete(transfer.transferId),
    )
  }

  /** The current record of a transfer. */
  async get(transferId: string): Promise<InboundTransfer | undefined> {
    return this.failures.shown(transferId) ?? this.options.store.get(transferId)
  }

  /** Resolves when the background pull (or completion) of `transferId` has ended (either way). */
  async wait(transferId: string): Promise<InboundTransfer> {
    await this.running.get(transferId)?.done
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
    await this.failures.flush()
    // A process killed mid-blob or mid-repo left temporary files and staged blocks that no
    // abort will ever remove; swept before a pull resumes (each resumed unit starts afresh).
    await this.options.sink.sweepUnfinished?.()
    const seen: InboundTransfer[] = []
    for (const t of await this.options.store.listActive()) {
      if (this.running.has(t.transferId) || this.failures.shown(t.transferId)) continue
      try {
        seen.push(await this.recoverOne(t))
      } catch (err) {
        // One record that cannot be written (a full disk) must not keep the others from resuming.
        seen.push(await this.fail(t.transferId, toFailure(err).reason, toFailure(err).message))
      }
    }
    return seen
  }

  /** What `recover` does with one active transfer; returns it as it now stands. */
  private async recoverOne(t: InboundTransfer): Promise<InboundTransfer> {
    const client = await this.options.restoreClient?.(t).catch(() => undefined)
    if (client) this.sessions.set(t.transferId, client)
    // Waiting for the user (a code, or a restore's signed operation) needs no session of ours.
    if (t.stage === 'awaitingPlcToken' || t.stage === 'awaitingRecovery') return t
    if (COMPLETION_STAGES.has(t.stage)) {
      // Errors land on the record (back to the code step, or failed); the next `complete` retries.
      this.completion.run(t.transferId).catch(() => {})
      return t
    }
    if (!client)
      return this.fail(t.transferId, 'Interrupted', 'the destination restarted during the transfer')
    // Recorded before the pull is launched: a store that cannot write leaves nothing running.
    const retrying = await this.options.store.update(t.transferId, { stage: 'retrying' })
    const identity = await this.options.resolver.resolve(t.did)
    this.launch(retrying, client, identity.signingKey, identity.handle, true)
    return retrying
  }

  /**
   * Stops every running pull without failing it (a shutdown): its record stays as it was, so
   * the next process's `recover` resumes it.
   */
  async close(): Promise<void> {
    this.closing = true
    for (const abort of this.aborts) abort.abort(new Error('the destination is shutting down'))
    await Promise.allSettled([...this.running.values()].map((r) => r.done))
  }

  private async pull(
    transfer: InboundTransfer,
    client: SourceClient,
    signingKey: string,
    handle: string | undefined,
    resumed: boolean,
  ): Promise<void> {
    const { transferId, did } = transfer
    const entry = this.running.get(transferId)
    if (!entry) return
    const { sink, store } = this.options
    if (transfer.dialect === 'plain' || transfer.dialect === 'restore' || transfer.dialect === 'draft') {
      // The reader records its own failures and resumes from the record on the next pull; a
      // stop is ours: a cancellation is recorded by `cancel`, a shutdown left for `recover`.
      const abort = new AbortController()
      entry.abort = abort
      this.aborts.add(abort)
      if (entry.cancel) abort.abort(entry.cancel)
      try {
        if (transfer.dialect === 'draft') await this.draft.pull(transferId, client, { signal: abort.signal })
        else await this.plain.pull(transferId, client, { signal: abort.signal })
      } catch (err) {
        if (this.closing || entry.cancel) return
        const failure = toFailure(err)
        await this.fail(transferId, failure.reason, failure.message)
      } finally {
        this.aborts.delete(abort)
      }
      return
    }
    const state: PullState = resumed
      ? await this.persistedState(transfer)
      : { progress: emptyProgress(), repo: undefined, blobCursor: undefined }
    try {
      const wellKnown = await this.puller.sourceWellKnown(client.url)
      const algorithm = selectAlgorithm(this.options.keys.algorithms, wellKnown.algorithms)
      if (!algorithm) {
        throw new ImportFailure(
          'NoCommonAlgorithm',
          `source offers ${wellKnown.algorithms.join(', ')}; we speak ${this.options.keys.algorithms.join(', ')}`,
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
        extensions: commonExtensions(this.extensions, wellKnown.extensions),
        entry,
      }
      this.pulls.set(transferId, { session, state })
      await this.puller.streamWithRetries(session, state)
      await this.puller.finishImport(session, state)
    } catch (err) {
      // A shutdown leaves the record as it is, for the next process to resume.
      if (this.closing) return
      const failure = toFailure(err)
      await this.fail(transferId, failure.reason, failure.message)
    }
  }

  /** What an earlier process had verified and committed for a transfer. */
  private async persistedState(t: InboundTransfer): Promise<PullState> {
    const repo: VerifiedRepo | undefined = t.repo && {
      commitCid: t.repo.commitCid,
      rev: t.repo.rev,
      records: t.progress.records,
      blobCids: new Set(await this.options.store.getReferencedBlobs(t.transferId)),
    }
    return { progress: { ...t.progress }, repo, blobCursor: t.blobCursor }
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
  async complete(
    transferId: string,
    params: {
      plcToken: string
      client?: SourceClient
      acceptMissingBlobs?: boolean
      userRotationKey?: string
      /** The password the user chose for this server, set at activation (kept in memory only). */
      password?: string
    },
  ): Promise<InboundTransfer> {
    const { store } = this.options
    if (params.password !== undefined) this.checkPassword(params.password)
    await this.completion.settled(transferId)
    const t = await store.get(transferId)
    if (!t) throw new EngineError('TransferNotFound', `no transfer ${transferId}`)
    if (params.client) this.sessions.set(transferId, params.client)
    if (t.stage === 'activated') return t
    if (COMPLETION_STAGES.has(t.stage)) return this.completion.run(transferId)
    if (t.stage !== 'awaitingPlcToken' || !t.signingKey) {
      throw new EngineError(
        'InvalidState',
        `transfer ${transferId} is ${t.status}/${t.stage}, not waiting for a PLC token`,
      )
    }
    const client = this.sessions.get(transferId)
    if (!client) throw new EngineError('InvalidState', 'no authorized session with the source; sign in again')
    // Missing blobs judged against a head that has moved since may be ones a later write dropped
    // (an edited or deleted post): the source then answers 409, and the catch-up at its paused,
    // final head judges them again. Against a head that held still they are missing for good.
    if (t.missingBlobs.length > 0 && !params.acceptMissingBlobs) {
      const head = await sourceHeadRev(client, t.did)
      if (head === undefined || head === t.repo?.rev) {
        throw new EngineError(
          'InvalidState',
          `${t.missingBlobs.length} blobs are missing: ${t.missingBlobs.join(', ')}`,
        )
      }
    }
    const identity = await this.options.resolver.resolve(t.did).catch((err: unknown) => {
      throw new EngineError(
        'PlcUnreachable',
        `the identity directory did not answer (${(err as Error).message}); try again in a few minutes`,
      )
    })
    let newRotationKeys: string[]
    try {
      newRotationKeys = moveRotationKeys(
        identity.rotationKeys,
        this.options.rotationKey,
        params.userRotationKey,
      )
    } catch (err) {
      if (err instanceof RotationKeyError) throw new EngineError('InvalidRotationKey', err.message)
      throw err
    }
    // Never stored: a password travels from the user's form to the sink, after the source
    // accepted the code that came with it (whoever holds only the page's URL cannot set it).
    if (params.password) this.passwords.set(transferId, params.password)
    else this.passwords.delete(transferId)
    await store.update(transferId, {
      status: 'completing',
      stage: 'signing',
      failure: undefined,
      completion: {
        plcToken: params.plcToken,
        newRotationKeys,
        ...(params.userRotationKey && { userRotationKey: params.userRotationKey }),
        ...(params.acceptMissingBlobs && { acceptMissingBlobs: true }),
      },
    })
    return this.completion.run(transferId)
  }

  /**
   * Asks the source to email the user a fresh PLC token (extension `plc-token-refresh`), for a
   * token that expired or never arrived. Throws `SourceError` when the source refuses (e.g.
   * `RateLimitExceeded`) and `EngineError` when it cannot do it at all.
   */
  async requestPlcToken(transferId: string): Promise<void> {
    const t = await this.options.store.get(transferId)
    if (!t) throw new EngineError('TransferNotFound', `no transfer ${transferId}`)
    if (t.stage !== 'awaitingPlcToken') {
      throw new EngineError(
        'InvalidState',
        `transfer ${transferId} is ${t.status}/${t.stage}, not waiting for a token`,
      )
    }
    const client = this.sessions.get(transferId)
    if (!client) throw new EngineError('InvalidState', 'no authorized session with the source; sign in again')
    // A draft source sends the code the standard way too (its step 11a).
    if (t.dialect === 'plain' || t.dialect === 'draft') {
      await requestPlainPlcCode(client)
      await this.options.store.update(transferId, { plcCodeRequestedAt: Date.now(), failure: undefined })
      return
    }
    const res = await client.fetch(`/xrpc/${NSID.requestPlcToken}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ did: t.did, transferId }),
    })
    if (res.ok) return
    const err = await SourceError.from(res, 'requestPlcToken')
    if (res.status === 404 && err.error !== 'TransferNotFound') {
      throw new EngineError(
        'InvalidState',
        'the source cannot send a new code (it lacks the plc-token-refresh extension)',
      )
    }
    throw err
  }

  /**
   * Imports what was written on the source since our export: a resumed export (the source's
   * head moved, so it sends the new CAR; blobs past our cursor), then reconciliation. After a
   * restart the pull's state is rebuilt from the record.
   */
  private async catchUp(t: InboundTransfer, client: SourceClient, round: number): Promise<void> {
    const { store } = this.options
    const { transferId } = t
    await store.update(transferId, { status: 'importing', stage: 'catchingUp', catchUps: round })
    try {
      const pull = this.pulls.get(transferId) ?? (await this.rebuildPull(t, client))
      const session = { ...pull.session, client }
      const before = { repo: pull.state.repoBytes ?? 0, total: pull.state.progress.bytesReceived }
      await this.puller.streamWithRetries(session, pull.state)
      const spent = (await store.get(transferId))?.catchUpBytes ?? { repo: 0, total: 0 }
      await store.update(transferId, {
        catchUpBytes: {
          repo: spent.repo + (pull.state.repoBytes ?? 0) - before.repo,
          total: spent.total + pull.state.progress.bytesReceived - before.total,
        },
      })
      const repo = pull.state.repo as VerifiedRepo
      const missing = await this.puller.reconcile(
        transferId,
        t.did,
        client,
        repo.blobCids,
        pull.state.progress,
      )
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

  /** The pull of a transfer this process did not start (a restart): its session and state again. */
  private async rebuildPull(
    t: InboundTransfer,
    client: SourceClient,
  ): Promise<{ session: PullSession; state: PullState }> {
    const wellKnown = await this.puller.sourceWellKnown(client.url)
    const identity = await this.options.resolver.resolve(t.did)
    if (!t.algorithm) throw new ImportFailure('StreamInvalid', 'the transfer has no negotiated algorithm')
    const pull = {
      session: {
        transferId: t.transferId,
        did: t.did,
        client,
        signingKey: identity.signingKey,
        algorithm: t.algorithm as PullSession['algorithm'],
        extensions: commonExtensions(this.extensions, wellKnown.extensions),
        entry: { bytes: t.progress.bytesReceived },
      },
      state: await this.persistedState(t),
    }
    this.pulls.set(t.transferId, pull)
    return pull
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
    return newest?.status === 'failed' && newest.failure && RESUMABLE.has(newest.failure.reason)
      ? newest
      : undefined
  }

  /**
   * Resumes a transfer that failed by connection or local storage, under the same transferId,
   * from what this destination had verified and committed (decision 7). The store's one-per-DID
   * rule still holds: refused while another transfer of the DID is in flight.
   */
  async resume(transferId: string, client: SourceClient): Promise<InboundTransfer> {
    await this.failures.flush()
    const t = await this.options.store.get(transferId)
    if (!t) throw new EngineError('TransferNotFound', `no transfer ${transferId}`)
    if (t.status !== 'failed' || !t.failure || !RESUMABLE.has(t.failure.reason)) {
      throw new EngineError(
        'InvalidState',
        `transfer ${transferId} is ${t.status}/${t.stage}: nothing to resume`,
      )
    }
    if (this.running.size >= this.limits.maxConcurrent) {
      throw new EngineError('LimitExceeded', `${this.running.size} transfers are running; try again later`)
    }
    // A restore's source is a copy, not the PDS the DID names; its keys were fixed at admission.
    const identity = isRestore(t)
      ? { signingKey: t.restore.repoSigningKey, handle: t.restore.handle }
      : await this.options.resolver.resolve(t.did)
    if (!isRestore(t) && 'pds' in identity && normalizeUrl(identity.pds) !== normalizeUrl(client.url)) {
      throw new EngineError('SourceMismatch', `${t.did} is hosted at ${identity.pds}, not ${client.url}`)
    }
    const retrying = await this.options.store.update(transferId, {
      status: 'importing',
      stage: 'retrying',
      failure: undefined,
    })
    this.launch(retrying, client, identity.signingKey, identity.handle, true)
    return retrying
  }

  /**
   * Cancels a move the user no longer wants, before their identity is asked to change: a
   * running pull stops at once (its stream aborted), a waiting one is closed; the transfer ends
   * `failed`/`Cancelled`. Refused once completion has begun (the source may have signed).
   */
  async cancel(transferId: string): Promise<InboundTransfer> {
    const t = await this.options.store.get(transferId)
    if (!t) throw new EngineError('TransferNotFound', `no transfer ${transferId}`)
    if (t.status === 'completed' || t.status === 'failed') return t
    if (COMPLETION_STAGES.has(t.stage)) {
      throw new EngineError(
        'InvalidState',
        'the move is already changing your identity; it cannot be cancelled now',
      )
    }
    const cancelled = new ImportFailure('Cancelled', 'you cancelled this move')
    const entry = this.running.get(transferId)
    if (entry) {
      entry.cancel = cancelled
      entry.abort?.abort(cancelled)
      await entry.done
    }
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
    const t = await this.options.store.get(transferId)
    if (!t || t.missingBlobs.length === 0) return []
    return (await this.options.sink.recordsUsingBlobs?.(t.did, t.missingBlobs)) ?? []
  }

  /**
   * Fetches the blobs still missing from a transfer waiting for its code once more (the user's
   * "try those again", e.g. after the source's operator restored them). Returns the record.
   */
  async retryMissingBlobs(transferId: string): Promise<InboundTransfer> {
    const t = await this.options.store.get(transferId)
    if (!t) throw new EngineError('TransferNotFound', `no transfer ${transferId}`)
    if (t.stage !== 'awaitingPlcToken' || t.missingBlobs.length === 0) return t
    const client = this.sessions.get(transferId)
    if (!client) throw new EngineError('InvalidState', 'no authorized session with the source; sign in again')
    const progress = { ...t.progress }
    const missing = await this.puller.reconcile(transferId, t.did, client, new Set(t.missingBlobs), progress)
    return this.options.store.update(transferId, {
      missingBlobs: missing,
      progress: { ...progress, blobsMissing: missing.length },
    })
  }

  /** Whether this destination's sink can set a password the user chooses in /migrate. */
  get canSetPassword(): boolean {
    return this.options.sink.setPassword !== undefined
  }

  /** Records that the user set their password after the move (through the PDS's reset flow). */
  async notePasswordChosen(transferId: string): Promise<InboundTransfer> {
    return this.options.store.update(transferId, { passwordChosen: true })
  }

  private checkPassword(password: string): void {
    if (!this.options.sink.setPassword) {
      throw new EngineError('InvalidPassword', 'this server sets passwords by email only')
    }
    if (password.length < MIN_PASSWORD || password.length > MAX_PASSWORD) {
      throw new EngineError(
        'InvalidPassword',
        `a password must have ${MIN_PASSWORD} to ${MAX_PASSWORD} characters`,
      )
    }
  }

  /** Drops what this process held for a transfer that has ended. */
  private forget(transferId: string): void {
    this.pulls.delete(transferId)
    this.sessions.delete(transferId)
  }

  /** Records a failure, best-effort (FailureLedger), and drops what this process held for it. */
  private async fail(transferId: string, reason: FailureReason, message: string): Promise<InboundTransfer> {
    this.forget(transferId)
    return this.failures.fail(transferId, reason, message)
  }
}
