import { createHash } from 'node:crypto'
import {
  decodeFrames,
  EXTENSION,
  EXTENSIONS_HEADER,
  isBlobCid,
  jwkPrivateKeyBytes,
  NSID,
  parseExtensionsHeader,
  parseSizeHint,
  parseWellKnown,
  publicJwk,
  SIZE_HINT_HEADER,
  setupRecipient,
  type TransferAlgorithm,
  WELL_KNOWN_PATH,
} from '@pds-transfer/core'
import { CID } from 'multiformats/cid'
import type { AccountSink } from './account-sink.ts'
import { backoff, type EngineLimits } from './engine-limits.ts'
import { FrameImporter } from './frame-importer.ts'
import { ImportFailure } from './import-failure.ts'
import type { InboundTransferStore, TransferProgress } from './inbound-transfer.ts'
import type { KeyRing } from './key-ring.ts'
import { IncompleteDiffError } from './layered-staging.ts'
import type { VerifiedRepo } from './repo-verifier.ts'
import { type SourceClient, SourceError } from './source-client.ts'
import { sourceHeadRev } from './source-head.ts'
import { isLocalStorageError, RETRYABLE, toFailure } from './transfer-failure.ts'

/** Resumed exports at most, after the first reconciliation, to judge missing blobs against a moving head. */
const MISSING_BLOB_ROUNDS = 2

/** What one pull knows across its export sessions. */
export interface PullState {
  progress: TransferProgress
  /** The repo verified and committed here, once its frame arrived. */
  repo: VerifiedRepo | undefined
  /** Last blob committed, in the source's listing order (the resume cursor). */
  blobCursor: string | undefined
  /** Bytes of repo CAR frames received by this process's sessions (a catch-up's cost). */
  repoBytes?: number
  /** A diff since the held repo did not verify over it: ask for whole CARs from now on. */
  wholeRepo?: boolean
}

/** One pull's fixed parameters, shared by its export sessions (first, resumed, catch-up). */
export interface PullSession {
  transferId: string
  did: string
  client: SourceClient
  /** The DID document's repo signing key, to verify the commit. */
  signingKey: string
  algorithm: TransferAlgorithm
  /** Extensions asked of this source (both well-known documents list them). */
  extensions: string[]
  /** This pull's running entry: bytes held for the quota; a cancellation the user asked for. */
  entry: { bytes: number; cancel?: ImportFailure; abort?: AbortController }
}

/** What the puller shares with the engine that owns it. */
export interface PullContext {
  options: { sink: AccountSink; store: InboundTransferStore; keys: KeyRing }
  limits: EngineLimits
  /** Bytes received by each running pull, for the in-flight quota. */
  running: ReadonlyMap<string, { bytes: number }>
  /** Export sessions in flight, aborted on shutdown. */
  aborts: Set<AbortController>
  closing(): boolean
}

/**
 * Pulls an account's data from a v1 (0014 HPKE) source: export sessions with retries and
 * resume, each frame decrypted, verified and committed as a unit, then getBlob reconciliation.
 * Invariant: nothing reaches the sink that has not verified, and what was committed is recorded
 * (repo head, blob cursor, referenced blobs) before the next unit is read, so a restart resumes.
 */
export class TransferPuller {
  constructor(private readonly ctx: PullContext) {}

  /**
   * Runs export sessions until one ends cleanly. A broken connection, a cut or a stall is
   * retried with backoff; with the `resume` extension each retry asks only for what is not yet
   * verified here (decision 7), otherwise it starts over (what is stored is not stored twice).
   * With `resume`, a session that committed something new before it broke does not use up an
   * attempt: a busy source (blobs deleted under its export) cuts often but never twice at the
   * same unit, and only sessions that get nowhere count toward the limit.
   */
  async streamWithRetries(session: PullSession, state: PullState): Promise<void> {
    const { attempts } = this.ctx.limits.retry
    const resumes = session.extensions.includes(EXTENSION.resume)
    for (let attempt = 1; ; attempt++) {
      const before = { repo: state.repo !== undefined, blobCursor: state.blobCursor }
      try {
        await this.streamOnce(session, state)
        return
      } catch (err) {
        // Not a fault of the connection: the same session's data again, whole.
        if (err instanceof IncompleteDiffError && !state.wholeRepo) {
          state.wholeRepo = true
          attempt--
          continue
        }
        const failure = toFailure(err)
        const advanced =
          resumes && (state.blobCursor !== before.blobCursor || (state.repo !== undefined && !before.repo))
        if (advanced && RETRYABLE.has(failure.reason)) attempt = 1
        if (this.ctx.closing() || !RETRYABLE.has(failure.reason) || attempt >= attempts) throw err
        const delay = backoff(this.ctx.limits.retry, attempt)
        await this.ctx.options.store.update(session.transferId, {
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
    const { sink, store } = this.ctx.options
    if (entry.cancel) throw entry.cancel
    const abort = new AbortController()
    this.ctx.aborts.add(abort)
    entry.abort = abort
    if (this.ctx.closing()) abort.abort(new Error('the destination is shutting down'))
    let stall: NodeJS.Timeout | undefined
    const touch = () => {
      clearTimeout(stall)
      stall = setTimeout(
        () => abort.abort(new ImportFailure('NoProgress', 'the source sent nothing for too long')),
        this.ctx.limits.stallTimeoutMs,
      )
    }
    try {
      const key = await this.ctx.options.keys.current(algorithm)
      if (!key)
        throw new ImportFailure('NoCommonAlgorithm', `no current ${algorithm} key; run KeyRing.rotate()`)
      // repo-diff: a moved head then costs only what was written since the rev held here.
      const diff =
        session.extensions.includes(EXTENSION.repoDiff) &&
        sink.openRepoBlocks !== undefined &&
        !state.wholeRepo
      const resume =
        session.extensions.includes(EXTENSION.resume) && state.repo
          ? {
              repoCommit: state.repo.commitCid,
              ...(diff && { repoRev: state.repo.rev }),
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
      // Counts are of what is held here, each unit once however many sessions brought it. A
      // resumed session sends only what is not yet held, so its counts add to what was; any
      // other starts over, resending what is held, so its counts take over once they pass it.
      const held = {
        frames: progress.framesReceived,
        bytes: progress.bytesReceived,
        blobs: progress.blobsReceived,
      }
      const base = resume ? held : { frames: 0, bytes: 0, blobs: 0 }
      const sent = { frames: 0, bytes: 0, blobs: 0 }
      const hint = applied.includes(EXTENSION.sizeHint)
        ? parseSizeHint(res.headers.get(SIZE_HINT_HEADER))
        : undefined
      await store.update(transferId, {
        status: 'importing',
        ...(hint && { expected: { bytes: base.bytes + hint.bytes, blobs: base.blobs + hint.blobs } }),
      })

      const importer = new FrameImporter({
        sink,
        did,
        signingKey: session.signingKey,
        maxBlobSize: this.ctx.limits.maxBlobSize,
        expectManifest,
        ...(resume && state.repo && { previousRepo: state.repo, diffOverPrevious: diff }),
        onProgress: async (delta) => {
          sent.frames += delta.frames ?? 0
          sent.bytes += delta.bytes ?? 0
          sent.blobs += delta.blobs ?? 0
          progress.framesReceived = Math.max(held.frames, base.frames + sent.frames)
          progress.bytesReceived = Math.max(held.bytes, base.bytes + sent.bytes)
          progress.blobsReceived = Math.max(held.blobs, base.blobs + sent.blobs)
          if (delta.records !== undefined) progress.records = delta.records
          if (delta.repo) {
            state.repoBytes = (state.repoBytes ?? 0) + (delta.bytes ?? 0)
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
      this.ctx.aborts.delete(abort)
    }
  }

  /**
   * After the stream: reconcile blobs referenced by the imported records, then wait for the PLC
   * token. A blob the source can no longer serve may be one that a write since the export
   * dereferenced (the user edited or deleted that post, and the PDS dropped the image), so a
   * blob counts as missing only against the source's current head: with `resume`, a resumed
   * export (only what changed, with repo-diff) brings the head up to date first, then reconcile
   * again, until the head holds still.
   */
  async finishImport(session: PullSession, state: PullState): Promise<void> {
    let missing: string[] = []
    for (let round = 0; ; round++) {
      const repo = state.repo as VerifiedRepo
      await this.ctx.options.store.update(session.transferId, {
        stage: 'reconciling',
        repo: { rev: repo.rev, commitCid: repo.commitCid },
      })
      missing = await this.reconcile(
        session.transferId,
        session.did,
        session.client,
        repo.blobCids,
        state.progress,
      )
      if (missing.length === 0 || round >= MISSING_BLOB_ROUNDS) break
      if (!session.extensions.includes(EXTENSION.resume)) break
      if ((await sourceHeadRev(session.client, session.did)) === repo.rev) break
      await this.streamWithRetries(session, state)
      if (state.repo?.commitCid === repo.commitCid) {
        // The head held still: what is missing is missing, but for what the stream brought.
        const { sink } = this.ctx.options
        const held = await Promise.all(missing.map((cid) => sink.hasBlob(session.did, cid)))
        missing = missing.filter((_, i) => !held[i])
        break
      }
    }
    await this.ctx.options.store.update(session.transferId, {
      stage: 'awaitingPlcToken',
      missingBlobs: missing,
      progress: { ...state.progress, blobsMissing: missing.length },
    })
  }

  /** Fetches each referenced blob we lack from the source's getBlob; returns those that could not be had. */
  async reconcile(
    transferId: string,
    did: string,
    client: SourceClient,
    referenced: Set<string>,
    progress: TransferProgress,
  ): Promise<string[]> {
    const missing: string[] = []
    for (const cid of referenced) {
      if (await this.ctx.options.sink.hasBlob(did, cid)) continue
      if (await this.fetchBlob(did, cid, client)) {
        progress.blobsReconciled++
        await this.ctx.options.store.update(transferId, { progress: { ...progress } })
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
    const upload = await this.ctx.options.sink.startBlob(did, cid, Number.isFinite(declared) ? declared : -1)
    const hash = createHash('sha256')
    let size = 0
    try {
      for await (const chunk of res.body) {
        size += chunk.length
        if (size > this.ctx.limits.maxBlobSize) throw new Error('blob over the size limit')
        hash.update(chunk)
        await upload.write(chunk)
      }
      if (!hash.digest().equals(parsed.multihash.digest)) throw new Error('bytes do not match the CID')
      await upload.commit()
      return true
    } catch (err) {
      await upload.abort().catch(() => {})
      // Our disk failing is not the source lacking the blob: the transfer fails LocalStorage.
      if (isLocalStorageError(err)) throw err
      return false
    }
  }

  private checkQuota(): void {
    let total = 0
    for (const r of this.ctx.running.values()) total += r.bytes
    if (total > this.ctx.limits.maxInFlightBytes) {
      throw new ImportFailure(
        'LimitExceeded',
        `in-flight transfers hold ${total} bytes, over the ${this.ctx.limits.maxInFlightBytes} quota`,
      )
    }
  }

  /** The source's well-known document (its DID, suites and extensions). */
  async sourceWellKnown(url: string) {
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

/** Passes a body through, calling `touch` on every chunk (the stall watchdog). */
async function* watched(body: AsyncIterable<Uint8Array>, touch: () => void): AsyncGenerator<Uint8Array> {
  for await (const chunk of body) {
    touch()
    yield chunk
  }
}
