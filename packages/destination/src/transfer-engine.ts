import { createHash } from 'node:crypto'
import type * as plc from '@did-plc/lib'
import {
  commonExtensions,
  decodeFrames,
  EXTENSION,
  EXTENSIONS_HEADER,
  isBlobCid,
  jwkPrivateKeyBytes,
  LIMITS,
  NSID,
  parseExtensionsHeader,
  parseSizeHint,
  parseWellKnown,
  publicJwk,
  SIZE_HINT_HEADER,
  selectAlgorithm,
  setupRecipient,
  type TransferAlgorithm,
  WELL_KNOWN_PATH,
  WireError,
} from '@pds-transfer/core'
import { CID } from 'multiformats/cid'
import type { AccountSink } from './account-sink.ts'
import type { DidResolver } from './did-resolver.ts'
import { FrameImporter } from './frame-importer.ts'
import { ImportFailure } from './import-failure.ts'
import {
  emptyProgress,
  type FailureReason,
  type InboundTransfer,
  type InboundTransferStore,
  type TransferProgress,
} from './inbound-transfer.ts'
import type { KeyRing } from './key-ring.ts'
import { checkPlcMove, PlcOperationError } from './plc-check.ts'
import type { VerifiedRepo } from './repo-verifier.ts'
import { moveRotationKeys, RotationKeyError } from './rotation-keys.ts'
import { type SourceClient, SourceError } from './source-client.ts'
import { createTransferId } from './transfer-id.ts'

/** Limits of the proposal's denial-of-service section (defaults are its recommendations). */
export interface EngineLimits {
  /** Concurrent inbound transfers on this worker (5). */
  maxConcurrent: number
  /** Concurrent inbound transfers from one source PDS (2). */
  maxPerSource: number
  /** Bytes all running transfers may have received in total (50 GB). */
  maxInFlightBytes: number
  /** A stream that delivers nothing for this long is abandoned as `NoProgress` (5 minutes). */
  stallTimeoutMs: number
  /** Largest single blob accepted (100 MB, the reference PDS's default). */
  maxBlobSize: number
  /** Export sessions per transfer when the connection breaks, and the first backoff (doubling). */
  retry: { attempts: number; baseDelayMs: number }
}

export const DEFAULT_LIMITS: EngineLimits = {
  maxConcurrent: 5,
  maxPerSource: 2,
  maxInFlightBytes: 50e9,
  stallTimeoutMs: 5 * 60_000,
  maxBlobSize: LIMITS.defaultMaxBlobSize,
  retry: { attempts: 5, baseDelayMs: 2000 },
}

/** Refusal of an engine call (not a transfer failure); `code` names it. */
export class EngineError extends Error {
  override readonly name = 'EngineError'
  constructor(
    readonly code:
      | 'LimitExceeded'
      | 'AccountAlreadyActive'
      | 'TransferNotFound'
      | 'InvalidState'
      | 'SourceMismatch'
      | 'ActivationFailed'
      | 'InvalidRotationKey',
    message: string,
  ) {
    super(message)
  }
}

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
}

/**
 * The receiving side's transfer engine: pulls an account from its source with exportAccount,
 * decrypts and imports each frame as a verified unit, reconciles blobs, completes with the
 * user's PLC token, submits the checked PLC operation, activates, and watches for rollback.
 * Every step is recorded in the `InboundTransferStore`.
 */
export class TransferEngine {
  readonly limits: EngineLimits
  /** Wire extensions this destination asks for; its well-known document advertises them. */
  readonly extensions: readonly string[]
  private readonly running = new Map<string, { done: Promise<void>; bytes: number }>()
  /** The authorized source session of each transfer started by this process (kept for completion). */
  private readonly sessions = new Map<string, SourceClient>()
  /** What each pull of this process verified, for resume and catch-up. */
  private readonly pulls = new Map<string, { session: PullSession; state: PullState }>()
  /** Export sessions in flight, to stop them on `close`. */
  private readonly aborts = new Set<AbortController>()
  private closing = false

  constructor(private readonly options: TransferEngineOptions) {
    this.limits = { ...DEFAULT_LIMITS, ...options.limits }
    this.extensions = options.extensions ?? [EXTENSION.endManifest, EXTENSION.resume, EXTENSION.sizeHint]
  }

  /**
   * Checks limits and the account, records a new transfer and starts pulling it in the
   * background. Returns the record as created; follow it with `get` or `wait`.
   */
  async start(params: { did: string; client: SourceClient }): Promise<InboundTransfer> {
    const { did, client } = params
    const identity = await this.options.resolver.resolve(did)
    if (normalizeUrl(identity.pds) !== normalizeUrl(client.url)) {
      throw new EngineError('SourceMismatch', `${did} is hosted at ${identity.pds}, not ${client.url}`)
    }
    if (normalizeUrl(identity.pds) === normalizeUrl(this.options.serviceUrl)) {
      throw new EngineError('AccountAlreadyActive', `${did} is already hosted here`)
    }
    if (await this.options.sink.isActive(did))
      throw new EngineError('AccountAlreadyActive', `${did} is active here`)
    const active = [...this.running.keys()]
    if (active.length >= this.limits.maxConcurrent) {
      throw new EngineError('LimitExceeded', `${active.length} transfers are running; try again later`)
    }
    const fromSource = (await this.options.store.listActive()).filter(
      (t) => this.running.has(t.transferId) && normalizeUrl(t.sourceUrl) === normalizeUrl(client.url),
    )
    if (fromSource.length >= this.limits.maxPerSource) {
      throw new EngineError('LimitExceeded', `${fromSource.length} transfers from ${client.url} are running`)
    }
    if (fromSource.some((t) => t.did === did))
      throw new EngineError('InvalidState', `${did} is already being imported`)

    const now = Date.now()
    const transfer: InboundTransfer = {
      transferId: createTransferId(now),
      did,
      sourceUrl: client.url,
      status: 'pending',
      stage: 'created',
      progress: emptyProgress(),
      missingBlobs: [],
      createdAt: now,
      updatedAt: now,
    }
    await this.options.store.create(transfer)
    this.launch(transfer, client, identity.signingKey, identity.handle, false)
    return transfer
  }

  /** Runs a pull in the background, tracked in `running`. */
  private launch(
    transfer: InboundTransfer,
    client: SourceClient,
    signingKey: string,
    handle: string | undefined,
    resumed: boolean,
  ): void {
    const entry = { bytes: 0, done: Promise.resolve() }
    this.running.set(transfer.transferId, entry)
    this.sessions.set(transfer.transferId, client)
    entry.done = this.pull(transfer, client, signingKey, handle, resumed).finally(() =>
      this.running.delete(transfer.transferId),
    )
  }

  /** The current record of a transfer. */
  async get(transferId: string): Promise<InboundTransfer | undefined> {
    return this.options.store.get(transferId)
  }

  /** Resolves when the background pull of `transferId` has ended (either way). */
  async wait(transferId: string): Promise<InboundTransfer> {
    await this.running.get(transferId)?.done
    const t = await this.get(transferId)
    if (!t) throw new EngineError('TransferNotFound', `no transfer ${transferId}`)
    return t
  }

  /**
   * After a restart: each transfer that was pulling resumes from what this destination had
   * verified and committed (decision 7), if `restoreClient` can give it an authorized client
   * again; otherwise it is marked `Interrupted` rather than left hanging. Transfers waiting for
   * the PLC token get their client back for `complete`. Returns the transfers it looked at.
   */
  async recover(): Promise<InboundTransfer[]> {
    const seen: InboundTransfer[] = []
    for (const t of await this.options.store.listActive()) {
      if (this.running.has(t.transferId)) continue
      const client = await this.options.restoreClient?.(t).catch(() => undefined)
      if (t.stage === 'awaitingPlcToken') {
        if (client) this.sessions.set(t.transferId, client)
        seen.push(t)
        continue
      }
      if (!client) {
        seen.push(
          await this.fail(t.transferId, 'Interrupted', 'the destination restarted during the transfer'),
        )
        continue
      }
      const identity = await this.options.resolver.resolve(t.did)
      this.launch(t, client, identity.signingKey, identity.handle, true)
      seen.push(await this.options.store.update(t.transferId, { stage: 'retrying' }))
    }
    return seen
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
    const state: PullState = resumed
      ? await this.persistedState(transfer)
      : { progress: emptyProgress(), repo: undefined, blobCursor: undefined }
    try {
      const wellKnown = await this.sourceWellKnown(client.url)
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
      await this.streamWithRetries(session, state)
      await this.finishImport(session, state)
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
   * Runs export sessions until one ends cleanly. A broken connection, a cut or a stall is
   * retried with backoff; with the `resume` extension each retry asks only for what is not yet
   * verified here (decision 7), otherwise it starts over (what is stored is not stored twice).
   */
  private async streamWithRetries(session: PullSession, state: PullState): Promise<void> {
    const { attempts, baseDelayMs } = this.limits.retry
    for (let attempt = 1; ; attempt++) {
      try {
        await this.streamOnce(session, state)
        return
      } catch (err) {
        const failure = toFailure(err)
        if (this.closing || !RETRYABLE.has(failure.reason) || attempt >= attempts) throw err
        const delay = baseDelayMs * 2 ** (attempt - 1)
        await this.options.store.update(session.transferId, {
          stage: 'retrying',
          retry: { attempt, of: attempts, nextAt: Date.now() + delay, lastFailure: failure },
        })
        await new Promise((resolve) => setTimeout(resolve, delay))
      }
    }
  }

  /** One exportAccount call: decrypts, verifies and imports every frame it delivers. */
  private async streamOnce(session: PullSession, state: PullState): Promise<void> {
    const { transferId, did, client, algorithm, entry } = session
    const { sink, store } = this.options
    const abort = new AbortController()
    this.aborts.add(abort)
    if (this.closing) abort.abort(new Error('the destination is shutting down'))
    let stall: NodeJS.Timeout | undefined
    const touch = () => {
      clearTimeout(stall)
      stall = setTimeout(
        () => abort.abort(new ImportFailure('NoProgress', 'the source sent nothing for too long')),
        this.limits.stallTimeoutMs,
      )
    }
    try {
      const key = await this.options.keys.current(algorithm)
      if (!key)
        throw new ImportFailure('NoCommonAlgorithm', `no current ${algorithm} key; run KeyRing.rotate()`)
      const resume =
        session.extensions.includes(EXTENSION.resume) && state.repo
          ? {
              repoCommit: state.repo.commitCid,
              ...(state.blobCursor !== undefined && { blobCursor: state.blobCursor }),
            }
          : undefined
      await store.update(transferId, { kid: key.kid, status: 'exporting', stage: 'streaming' })
      touch()
      const res = await client.fetch(`/xrpc/${NSID.exportAccount}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          did,
          transferId,
          algorithm,
          encryptionKey: publicJwk(key),
          ...(session.extensions.length > 0 && { extensions: session.extensions }),
          ...(resume && { resume }),
        }),
        signal: abort.signal,
      })
      if (!res.ok || !res.body) throw await SourceError.from(res, 'exportAccount')
      const headerAlg = res.headers.get('atproto-transfer-algorithm')
      if (headerAlg !== algorithm) {
        throw new ImportFailure(
          'StreamInvalid',
          `source answered with algorithm ${headerAlg}, not ${algorithm}`,
        )
      }
      const applied = parseExtensionsHeader(res.headers.get(EXTENSIONS_HEADER))
      const unasked = applied.filter((e) => !session.extensions.includes(e))
      if (unasked.length > 0) {
        throw new ImportFailure('StreamInvalid', `source applied extensions we did not ask for: ${unasked}`)
      }
      const expectManifest = applied.includes(EXTENSION.endManifest)
      const enc = Buffer.from(res.headers.get('atproto-transfer-enc') ?? '', 'base64url')
      const keys = await setupRecipient({
        algorithm,
        recipientPrivateKey: jwkPrivateKeyBytes(key),
        enc,
        did,
        transferId,
      })
      const { progress } = state
      const hint = applied.includes(EXTENSION.sizeHint)
        ? parseSizeHint(res.headers.get(SIZE_HINT_HEADER))
        : undefined
      await store.update(transferId, {
        status: 'importing',
        ...(hint && {
          expected: {
            bytes: progress.bytesReceived + hint.bytes,
            blobs: progress.blobsReceived + hint.blobs,
          },
        }),
      })

      const importer = new FrameImporter({
        sink,
        did,
        signingKey: session.signingKey,
        maxBlobSize: this.limits.maxBlobSize,
        expectManifest,
        ...(resume && state.repo && { previousRepo: state.repo }),
        onProgress: async (delta) => {
          progress.framesReceived += delta.frames ?? 0
          progress.bytesReceived += delta.bytes ?? 0
          progress.blobsReceived += delta.blobs ?? 0
          if (delta.records !== undefined) progress.records = delta.records
          if (delta.repo) {
            state.repo = delta.repo
            await store.putReferencedBlobs(transferId, delta.repo.blobCids)
          }
          if (delta.blobCursor !== undefined) state.blobCursor = delta.blobCursor
          entry.bytes = progress.bytesReceived
          this.checkQuota()
          await store.update(transferId, {
            progress: { ...progress },
            ...(delta.repo && { repo: { rev: delta.repo.rev, commitCid: delta.repo.commitCid } }),
            ...(delta.blobCursor !== undefined && { blobCursor: delta.blobCursor }),
          })
        },
      })
      const body = watched(res.body, touch)
      for await (const frame of decodeFrames(body, { keys })) await importer.import(frame)
      if (!state.repo) throw new ImportFailure('StreamCut', 'the stream ended without a repo CAR')
      // Decision 1: with the extension, EOF before the manifest is a cut, even at a frame boundary.
      if (expectManifest && !importer.endManifest) {
        throw new ImportFailure('StreamCut', 'the stream ended at a frame boundary before the end manifest')
      }
      await store.update(transferId, { endOfStream: expectManifest ? 'manifest' : 'unverified' })
    } catch (err) {
      // Stop the source's stream too: nothing more of this attempt will be read.
      if (!abort.signal.aborted) abort.abort(err)
      throw abort.signal.reason instanceof ImportFailure ? abort.signal.reason : err
    } finally {
      clearTimeout(stall)
      this.aborts.delete(abort)
    }
  }

  /** After the stream: reconcile blobs referenced by the imported records, then wait for the PLC token. */
  private async finishImport(session: PullSession, state: PullState): Promise<void> {
    const repo = state.repo as VerifiedRepo
    await this.options.store.update(session.transferId, {
      stage: 'reconciling',
      repo: { rev: repo.rev, commitCid: repo.commitCid },
    })
    const missing = await this.reconcile(
      session.transferId,
      session.did,
      session.client,
      repo.blobCids,
      state.progress,
    )
    await this.options.store.update(session.transferId, {
      stage: 'awaitingPlcToken',
      missingBlobs: missing,
      progress: { ...state.progress, blobsMissing: missing.length },
    })
  }

  /** Fetches each referenced blob we lack from the source's getBlob; returns those that could not be had. */
  private async reconcile(
    transferId: string,
    did: string,
    client: SourceClient,
    referenced: Set<string>,
    progress: TransferProgress,
  ): Promise<string[]> {
    const missing: string[] = []
    for (const cid of referenced) {
      if (await this.options.sink.hasBlob(did, cid)) continue
      if (await this.fetchBlob(did, cid, client)) {
        progress.blobsReconciled++
        await this.options.store.update(transferId, { progress: { ...progress } })
      } else missing.push(cid)
    }
    return missing
  }

  private async fetchBlob(did: string, cid: string, client: SourceClient): Promise<boolean> {
    let parsed: CID
    try {
      parsed = CID.parse(cid)
    } catch {
      return false
    }
    if (!isBlobCid(parsed)) return false
    const res = await client
      .fetch(`/xrpc/com.atproto.sync.getBlob?did=${encodeURIComponent(did)}&cid=${encodeURIComponent(cid)}`)
      .catch(() => undefined)
    if (!res?.ok || !res.body) return false
    const declared = Number(res.headers.get('content-length') ?? Number.NaN)
    const upload = await this.options.sink.startBlob(did, cid, Number.isFinite(declared) ? declared : -1)
    const hash = createHash('sha256')
    let size = 0
    try {
      for await (const chunk of res.body) {
        size += chunk.length
        if (size > this.limits.maxBlobSize) throw new Error('blob over the size limit')
        hash.update(chunk)
        await upload.write(chunk)
      }
      if (!hash.digest().equals(parsed.multihash.digest)) throw new Error('bytes do not match the CID')
      await upload.commit()
      return true
    } catch {
      await upload.abort()
      return false
    }
  }

  /**
   * Completes a transfer waiting for its PLC token: asks the source to sign the move, checks
   * the operation, submits it to PLC, activates the account, and starts the rollback watch.
   * With blobs still missing it refuses unless `acceptMissingBlobs` (the user saw the list).
   * `userRotationKey` (a `did:key` the user holds) is put first in the new rotation keys, so
   * the user can override any server for the 72-hour window (0014 "Adversarial Migration").
   */
  async complete(
    transferId: string,
    params: {
      plcToken: string
      client?: SourceClient
      acceptMissingBlobs?: boolean
      userRotationKey?: string
    },
  ): Promise<InboundTransfer> {
    const { store } = this.options
    const t = await store.get(transferId)
    if (!t) throw new EngineError('TransferNotFound', `no transfer ${transferId}`)
    if (t.stage === 'activating') return this.activate(transferId)
    if (t.stage !== 'awaitingPlcToken' || !t.signingKey) {
      throw new EngineError(
        'InvalidState',
        `transfer ${transferId} is ${t.status}/${t.stage}, not waiting for a PLC token`,
      )
    }
    if (t.missingBlobs.length > 0 && !params.acceptMissingBlobs) {
      throw new EngineError(
        'InvalidState',
        `${t.missingBlobs.length} blobs are missing: ${t.missingBlobs.join(', ')}`,
      )
    }
    const client = params.client ?? this.sessions.get(transferId)
    if (!client) throw new EngineError('InvalidState', 'no authorized session with the source; sign in again')
    const identity = await this.options.resolver.resolve(t.did)
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
    const signingKey = t.signingKey
    const callComplete = () =>
      client.fetch(`/xrpc/${NSID.completeTransfer}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          did: t.did,
          transferId,
          plcSignatureToken: params.plcToken,
          newPdsEndpoint: this.options.serviceUrl,
          newSigningKey: signingKey,
          newRotationKeys,
        }),
      })
    let res: Response
    for (let round = 1; ; round++) {
      await store.update(transferId, { status: 'completing', stage: 'submittingPlc' })
      res = await callComplete()
      if (res.ok) break
      const err = await SourceError.from(res, 'completeTransfer')
      // Decision 6: records written on the source since our export are fetched before the
      // source lets the account go, so no write is lost.
      const pull = this.pulls.get(transferId)
      if (err.error === 'RepoChangedDuringTransfer' && pull && round <= MAX_CATCH_UPS) {
        await this.catchUp(transferId, { ...pull, session: { ...pull.session, client } }, round)
        continue
      }
      // A wrong or expired token, or a repo that keeps moving, leaves the transfer waiting.
      const retryable = err.error === 'InvalidPlcToken' || err.error === 'RepoChangedDuringTransfer'
      if (retryable) {
        await store.update(transferId, { status: 'importing', stage: 'awaitingPlcToken' })
        throw err
      }
      return this.fail(transferId, 'SourceRefused', err.message)
    }
    const body = (await res.json()) as { signedPlcOperation?: unknown }
    let op: plc.Operation
    try {
      op = await checkPlcMove(this.options.plc, body.signedPlcOperation, {
        did: t.did,
        pdsEndpoint: this.options.serviceUrl,
        signingKey: t.signingKey,
        rotationKey: this.options.rotationKey,
        requestedRotationKeys: newRotationKeys,
        ...(params.userRotationKey && { firstRotationKey: params.userRotationKey }),
      })
    } catch (err) {
      if (err instanceof PlcOperationError) return this.fail(transferId, 'PlcOperationInvalid', err.message)
      throw err
    }
    try {
      await this.options.plc.sendOperation(t.did, op)
    } catch (err) {
      return this.fail(transferId, 'PlcSubmitFailed', (err as Error).message)
    }
    await store.update(transferId, {
      stage: 'activating',
      plcOperation: op as unknown as Record<string, unknown>,
    })
    return this.activate(transferId)
  }

  /** Activates the account once the PLC directory names us; on failure the transfer stays `activating`, for a retry. */
  private async activate(transferId: string): Promise<InboundTransfer> {
    const { store, sink } = this.options
    const t = (await store.get(transferId)) as InboundTransfer
    try {
      await sink.activate(t.did)
    } catch (err) {
      const message = (err as Error).message
      await store.update(transferId, { failure: { reason: 'ActivationFailed', message } })
      throw new EngineError(
        'ActivationFailed',
        `the PLC directory now names this PDS, but activation failed: ${message}`,
      )
    }
    this.forget(transferId)
    return store.update(transferId, {
      failure: undefined,
      status: 'completed',
      stage: 'activated',
      watchUntil: Date.now() + (this.options.watchHours ?? 72) * 3600_000,
    })
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
   * head moved, so it sends the new CAR; blobs past our cursor), then reconciliation.
   */
  private async catchUp(
    transferId: string,
    pull: { session: PullSession; state: PullState },
    round: number,
  ): Promise<void> {
    const { store } = this.options
    await store.update(transferId, { status: 'importing', stage: 'catchingUp', catchUps: round })
    try {
      await this.streamWithRetries(pull.session, pull.state)
    } catch (err) {
      const failure = toFailure(err)
      await store.update(transferId, { status: 'importing', stage: 'awaitingPlcToken' })
      throw new EngineError('InvalidState', `catching up with the source failed: ${failure.message}`)
    }
    const repo = pull.state.repo as VerifiedRepo
    const missing = await this.reconcile(
      transferId,
      pull.session.did,
      pull.session.client,
      repo.blobCids,
      pull.state.progress,
    )
    await store.update(transferId, {
      repo: { rev: repo.rev, commitCid: repo.commitCid },
      missingBlobs: missing,
      progress: { ...pull.state.progress, blobsMissing: missing.length },
    })
    if (missing.length > 0) {
      await store.update(transferId, { stage: 'awaitingPlcToken' })
      throw new EngineError('InvalidState', `${missing.length} blobs written since the export are missing`)
    }
  }

  /**
   * Checks each completed transfer inside its watch window: if the DID's PLC state no longer
   * points at us, records a rollback (the user must act with their own rotation key).
   */
  async checkRollbacks(now: number = Date.now()): Promise<InboundTransfer[]> {
    const flagged: InboundTransfer[] = []
    for (const t of await this.options.store.listWatched(now)) {
      if (t.rollback) continue
      const data = await this.options.plc.getDocumentData(t.did)
      const pds = data.services.atproto_pds?.endpoint
      if (
        normalizeUrl(pds ?? '') === normalizeUrl(this.options.serviceUrl) &&
        data.verificationMethods.atproto === t.signingKey
      ) {
        continue
      }
      const last = (await this.options.plc.getAuditableLog(t.did)).filter((e) => !e.nullified).at(-1)
      flagged.push(
        await this.options.store.update(t.transferId, {
          rollback: {
            detectedAt: now,
            operationCid: last?.cid ?? 'unknown',
            message: `PLC now points ${t.did} at ${pds ?? 'no PDS'}; use your own rotation key to restore it`,
          },
        }),
      )
    }
    return flagged
  }

  /** Drops what this process held for a transfer that has ended. */
  private forget(transferId: string): void {
    this.pulls.delete(transferId)
    this.sessions.delete(transferId)
  }

  private checkQuota(): void {
    let total = 0
    for (const r of this.running.values()) total += r.bytes
    if (total > this.limits.maxInFlightBytes) {
      throw new ImportFailure(
        'LimitExceeded',
        `in-flight transfers hold ${total} bytes, over the ${this.limits.maxInFlightBytes} quota`,
      )
    }
  }

  private async fail(transferId: string, reason: FailureReason, message: string): Promise<InboundTransfer> {
    this.forget(transferId)
    return this.options.store.update(transferId, {
      status: 'failed',
      stage: 'failed',
      failure: { reason, message },
    })
  }

  private async sourceWellKnown(url: string) {
    let res: Response
    try {
      res = await fetch(`${url}${WELL_KNOWN_PATH}`, { signal: AbortSignal.timeout(10_000) })
    } catch (err) {
      throw new ImportFailure('SourceUnreachable', `${url}${WELL_KNOWN_PATH}: ${(err as Error).message}`)
    }
    if (!res.ok)
      throw new ImportFailure(
        'SourceRefused',
        `${url} does not support transfers (${WELL_KNOWN_PATH}: ${res.status})`,
      )
    try {
      return parseWellKnown(await res.json()).document
    } catch (err) {
      throw new ImportFailure('SourceRefused', `${url}${WELL_KNOWN_PATH}: ${(err as Error).message}`)
    }
  }
}

/** Catch-up rounds before completion gives up on a repo that keeps moving (the user retries). */
const MAX_CATCH_UPS = 3

/** Failures of the connection rather than of the data: worth another attempt. */
const RETRYABLE: ReadonlySet<FailureReason> = new Set(['StreamCut', 'SourceUnreachable', 'NoProgress'])

/** What one pull knows across its export sessions. */
interface PullState {
  progress: TransferProgress
  /** The repo verified and committed here, once its frame arrived. */
  repo: VerifiedRepo | undefined
  /** Last blob committed, in the source's listing order (the resume cursor). */
  blobCursor: string | undefined
}

interface PullSession {
  transferId: string
  did: string
  client: SourceClient
  /** The DID document's repo signing key, to verify the commit. */
  signingKey: string
  algorithm: TransferAlgorithm
  /** Extensions asked of this source (both well-known documents list them). */
  extensions: string[]
  entry: { bytes: number }
}

/** Maps whatever ended a pull to a named failure. */
function toFailure(err: unknown): { reason: FailureReason; message: string } {
  if (err instanceof ImportFailure) return { reason: err.reason, message: err.message }
  if (err instanceof SourceError) return { reason: 'SourceRefused', message: err.message }
  if (err instanceof WireError) {
    const cut = err.reason === 'TruncatedFrame' || err.reason === 'TruncatedHeader'
    return { reason: cut ? 'StreamCut' : 'StreamInvalid', message: err.message }
  }
  const message = err instanceof Error ? err.message : String(err)
  return { reason: 'SourceUnreachable', message }
}

/** Passes a body through, calling `touch` on every chunk (the stall watchdog). */
async function* watched(body: AsyncIterable<Uint8Array>, touch: () => void): AsyncGenerator<Uint8Array> {
  for await (const chunk of body) {
    touch()
    yield chunk
  }
}

function normalizeUrl(url: string): string {
  return url.replace(/\/+$/, '').toLowerCase()
}
