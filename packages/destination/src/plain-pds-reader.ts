/**
 * The reader for a plain PDS (nothing of ours installed): the account's data over the sync
 * endpoints every PDS serves. Discover (the DID document names the PDS and the signing key),
 * read and verify the repo (`getRepo` through the v1 CAR path), the blobs (the union of
 * `listBlobs` and the blob refs of the verified records, each hash-checked while streamed), the
 * preferences (`getPreferences`, validated), commit each into the sink, reconcile, and leave the
 * transfer at `awaitingPlcToken` with the account deactivated here.
 *
 * Invariant: nothing reaches the sink unverified, and each committed step is recorded in the
 * `InboundTransferStore` (repo head and referenced blobs, the listBlobs cursor after a page is
 * wholly held) before the next is read, so `pull` again after a cut, a failure or a restart
 * fetches only what is not yet held.
 */
import type { AccountSink } from './account-sink.ts'
import { forEachBounded } from './bounded-each.ts'
import type { DidResolver } from './did-resolver.ts'
import { EngineError } from './engine-error.ts'
import { DEFAULT_LIMITS, type EngineLimits } from './engine-limits.ts'
import { ImportFailure } from './import-failure.ts'
import type { InboundTransfer, InboundTransferStore, TransferProgress } from './inbound-transfer.ts'
import { requestPlainPlcCode } from './plain-pds-signer.ts'
import type { VerifiedRepo } from './repo-verifier.ts'
import { isRestore } from './restore-admission.ts'
import type { SourceClient } from './source-client.ts'
import { readAccountEmail } from './sync-account-email.ts'
import { type BlobFetchOutcome, fetchBlob } from './sync-blob-fetch.ts'
import { readPreferences } from './sync-preferences.ts'
import { importRepoFromSync } from './sync-repo-import.ts'
import {
  exhaustedFailure,
  fetchStreaming,
  readJson,
  TransientSourceError,
  withRetries,
} from './sync-retry.ts'
import { checkNewTransfer, newTransfer, refusalError } from './transfer-admission.ts'
import { normalizeUrl } from './transfer-completion.ts'
import { toFailure } from './transfer-failure.ts'

/** Largest listBlobs or getLatestCommit answer read (a page of 1000 CIDs is about 60 kB). */
const MAX_JSON_BYTES = 4 * 1024 * 1024

export interface PlainPdsReaderOptions {
  sink: AccountSink
  store: InboundTransferStore
  resolver: DidResolver
  /** Our public PDS URL: an account already hosted here is refused. */
  serviceUrl: string
  /** `retry`, `stallTimeoutMs`, `maxBlobSize` and `maxPerSource` apply (engine defaults). */
  limits?: Partial<EngineLimits>
  /** Blobs fetched at once (default: `limits.blobConcurrency`). */
  blobConcurrency?: number
  /** CIDs per listBlobs page (1000, the lexicon's maximum). */
  listBlobsLimit?: number
}

/** How the two lists of blobs compared, over what this pull listed and had to fetch. */
export interface BlobListingReport {
  /** CIDs listBlobs returned in this pull. */
  listed: number
  /** Blob CIDs referenced by the verified records. */
  referenced: number
  /** Listed but referenced by no record (moved anyway: listBlobs is the source's own account of them). */
  listedNotReferenced: string[]
  /** Referenced, not held, and not listed by this pull (fetched by CID). */
  referencedNotListed: string[]
  /** Blobs stored by this pull. */
  fetched: number
  /** Blobs skipped because they were already held here (an earlier pull, or a duplicate). */
  alreadyHeld: number
  /** Blobs that could not be had, with why. */
  missing: { cid: string; why: string }[]
}

/** What a dialect's further units ended with. */
export interface ExtraOutcome {
  /** The blobs it could not have, with why (they join `missingBlobs`). */
  missing: { cid: string; why: string }[]
  /** What of the account it did not move, with why, for the user (the transfer's `notMoved`). */
  notMoved?: string[]
}

/** A dialect's further units (see `pull`'s `extra`). */
export type ExtraUnits = (pull: {
  did: string
  /** `did:key` the repo verified with: the DID document's `#atproto` key as the pull resolved it. */
  signingKey: string
  client: SourceClient
}) => Promise<ExtraOutcome>

/** What a pull ended with. */
export interface PlainPdsPullResult {
  transfer: InboundTransfer
  blobs: BlobListingReport
  /** Whether getRepo was fetched (not when the held repo is still the source's head). */
  repoFetched: boolean
}

/**
 * Pulls accounts from plain PDSes into an `AccountSink`. `start` records a transfer (admitted as
 * the engine admits one: one in flight per DID, `maxPerSource` per source) and `pull` runs or
 * resumes it; the record ends at `importing`/`awaitingPlcToken`, or `failed` with a named reason.
 */
export class PlainPdsReader {
  readonly limits: EngineLimits
  /** The stop signal of each pull running here, for its retries. */
  private readonly signals = new Map<string, AbortSignal | undefined>()

  constructor(private readonly options: PlainPdsReaderOptions) {
    this.limits = {
      ...DEFAULT_LIMITS,
      ...options.limits,
      retry: { ...DEFAULT_LIMITS.retry, ...options.limits?.retry },
    }
  }

  /**
   * Discovers the account (its DID document must name `client.url` as its PDS) and records a
   * new transfer, not yet pulled. Throws `EngineError` when it is refused.
   */
  async start(params: { did: string; client: SourceClient }): Promise<InboundTransfer> {
    const { did, client } = params
    await checkNewTransfer(this.options, did, client.url)
    const transfer: InboundTransfer = { ...newTransfer(did, client.url), dialect: 'plain' }
    const refusal = await this.options.store.create(transfer, {
      source: normalizeUrl(client.url),
      maxPerSource: this.limits.maxPerSource,
    })
    if (refusal) throw refusalError(refusal, did, client.url)
    return transfer
  }

  /**
   * Pulls the transfer's data, or resumes it from what its record says is held: the repo
   * (skipped if the source's head is still the one held), blobs (listBlobs from the recorded
   * cursor, then the records' refs not held), preferences. Ends at `awaitingPlcToken`; a
   * failure is recorded by name (`failed`) and returned, and `pull` may be called again.
   */
  async pull(
    transferId: string,
    source: SourceClient,
    options: {
      /**
       * Stops the pull between requests and aborts the one in flight. The record is then left
       * as it stands (what is held stays held) and the signal's reason is thrown: the caller
       * records a cancellation, or leaves a shutdown for `recover`.
       */
      signal?: AbortSignal
      /** Pull `getPreferences` (default true; a draft source without `preferences` is not asked). */
      preferences?: boolean
      /** Read the email from `getSession` (default true; a draft source gave it in its private state). */
      accountEmail?: boolean
      /**
       * Data a dialect adds after the preferences and before the PLC code is asked for
       * (permissioned data: the draft's `permissioned-data`, a plain PDS's probed `listSpaces`), read with the pull's client and the key the repo verified
       * with; the blobs it could not have join `missingBlobs`.
       */
      extra?: ExtraUnits
    } = {},
  ): Promise<PlainPdsPullResult> {
    this.signals.set(transferId, options.signal)
    try {
      return await this.pullOnce(transferId, source, options.signal, {
        preferences: options.preferences ?? true,
        accountEmail: options.accountEmail ?? true,
        ...(options.extra && { extra: options.extra }),
      })
    } finally {
      this.signals.delete(transferId)
    }
  }

  private async pullOnce(
    transferId: string,
    source: SourceClient,
    signal: AbortSignal | undefined,
    units: { preferences: boolean; accountEmail: boolean; extra?: ExtraUnits },
  ): Promise<PlainPdsPullResult> {
    const client = signal ? abortable(source, signal) : source
    const { store } = this.options
    const report: BlobListingReport = {
      listed: 0,
      referenced: 0,
      listedNotReferenced: [],
      referencedNotListed: [],
      fetched: 0,
      alreadyHeld: 0,
      missing: [],
    }
    let repoFetched = false
    const t = await store.get(transferId)
    if (!t) throw new EngineError('TransferNotFound', `no transfer ${transferId}`)
    if (t.stage === 'awaitingPlcToken' || t.stage === 'awaitingRecovery')
      return { transfer: t, blobs: report, repoFetched }
    if (t.status === 'completing' || t.status === 'completed') {
      throw new EngineError('InvalidState', `transfer ${transferId} is ${t.status}/${t.stage}`)
    }
    try {
      // A restore's copy is verified against the state the user's key returns to, not the
      // current one (a hostile change may have replaced the signing key).
      const identity = isRestore(t)
        ? { signingKey: t.restore.repoSigningKey, handle: t.restore.handle }
        : await this.options.resolver.resolve(t.did)
      const { signingKey } = await this.options.sink.createDeactivatedAccount(
        t.did,
        identity.handle === undefined ? {} : { handle: identity.handle },
      )
      await store.update(transferId, {
        signingKey,
        status: 'importing',
        stage: 'streaming',
        failure: undefined,
        ...(t.sourceDid === undefined && { sourceDid: await this.serviceDid(client) }),
      })
      const progress: TransferProgress = { ...t.progress }
      let repo = await this.heldRepo(t, client)
      if (!repo) {
        const pulled = await this.retrying(transferId, () =>
          importRepoFromSync({
            client,
            sink: this.options.sink,
            did: t.did,
            signingKey: identity.signingKey,
            stallTimeoutMs: this.limits.stallTimeoutMs,
          }),
        )
        repo = pulled.repo
        repoFetched = true
        progress.records = repo.records
        progress.bytesReceived += pulled.bytes
        // Recorded before any blob is read: a resumed pull knows the repo and its refs.
        await store.putReferencedBlobs(transferId, repo.blobCids)
        await store.update(transferId, {
          stage: 'streaming',
          repo: { rev: repo.rev, commitCid: repo.commitCid },
          progress: { ...progress },
        })
      }
      report.referenced = repo.blobCids.size

      const listed = await this.listedBlobs(t, client, progress, report)
      await store.update(transferId, { stage: 'reconciling', progress: { ...progress } })
      for (const cid of listed) if (!repo.blobCids.has(cid)) report.listedNotReferenced.push(cid)
      // What no page of this pull listed: the records' refs, and what an earlier pull could not have.
      const unlisted: string[] = []
      for (const cid of new Set([...repo.blobCids, ...t.missingBlobs])) {
        if (listed.has(cid)) continue
        if (await this.options.sink.hasBlob(t.did, cid)) report.alreadyHeld++
        else unlisted.push(cid)
      }
      report.referencedNotListed = unlisted.filter((cid) => repo.blobCids.has(cid))
      await forEachBounded(unlisted, this.blobConcurrency, async (cid) => {
        if (await this.moveBlob(transferId, t.did, cid, client, progress, report)) progress.blobsReconciled++
      })

      const notRestored: string[] = []
      const preferences = !units.preferences
        ? undefined
        : await this.optionalForRestore(
            t,
            () => this.retrying(transferId, () => readPreferences(client, this.limits.stallTimeoutMs)),
            (why) => notRestored.push(`preferences (${why})`),
          )
      if (preferences) await this.options.sink.putPreferences(t.did, preferences)
      const email = !units.accountEmail
        ? undefined
        : await this.optionalForRestore(
            t,
            () => this.retrying(transferId, () => readAccountEmail(client, this.limits.stallTimeoutMs)),
            (why) => notRestored.push(`email (${why})`),
          )
      if (email?.email !== undefined) await this.options.sink.putAccountState(t.did, email)
      else if (email && isRestore(t)) notRestored.push('email (the copy does not hold it)')
      const notMoved: string[] = []
      if (units.extra) {
        const held = new Set(report.missing.map((m) => m.cid))
        const extra = await units.extra({ did: t.did, signingKey: identity.signingKey, client })
        for (const m of extra.missing) if (!held.has(m.cid)) report.missing.push(m)
        notMoved.push(...(extra.notMoved ?? []))
      }

      if (isRestore(t)) {
        // No code to ask for: the user's own key signs the identity's move (spec/recovery.md).
        const missing = report.missing.map((m) => m.cid)
        const done = await store.update(transferId, {
          status: 'importing',
          stage: 'awaitingRecovery',
          retry: undefined,
          missingBlobs: missing,
          notRestored,
          progress: { ...progress, blobsMissing: missing.length },
        })
        return { transfer: done, blobs: report, repoFetched }
      }

      const missing = report.missing.map((m) => m.cid)
      let done = await store.update(transferId, {
        status: 'importing',
        stage: 'awaitingPlcToken',
        retry: undefined,
        missingBlobs: missing,
        notMoved: notMoved.length > 0 ? notMoved : undefined,
        progress: { ...progress, blobsMissing: missing.length },
      })
      // The code is asked for once the data has moved (decision 8), and once: a resumed pull
      // leaves the user with the code they have (a new one is theirs to ask for).
      if (done.plcCodeRequestedAt === undefined) {
        done = await requestPlainPlcCode(client).then(
          () => store.update(transferId, { plcCodeRequestedAt: Date.now() }),
          (err: unknown) =>
            store.update(transferId, {
              failure: {
                reason: 'SourceRefused',
                message: `your current server did not email the code: ${(err as Error).message}`,
              },
            }),
        )
      }
      return { transfer: done, blobs: report, repoFetched }
    } catch (err) {
      if (signal?.aborted) throw signal.reason
      const failure = toFailure(err instanceof TransientSourceError ? exhaustedFailure(err) : err)
      const failed = await store.update(transferId, { status: 'failed', stage: 'failed', failure })
      return { transfer: failed, blobs: report, repoFetched }
    }
  }

  /**
   * `read()`, except that a restore goes on without what its copy refuses to give (a backup
   * made without the account's sign-in holds no preferences; another tool's service may not
   * serve them): `skipped` hears why, and the user is told. A move from a PDS needs it all.
   */
  private async optionalForRestore<T>(
    t: InboundTransfer,
    read: () => Promise<T>,
    skipped: (why: string) => void,
  ): Promise<T | undefined> {
    if (!isRestore(t)) return read()
    try {
      return await read()
    } catch (err) {
      if (err instanceof TransientSourceError || this.signals.get(t.transferId)?.aborted) throw err
      skipped((err as Error).message)
      return undefined
    }
  }

  private get blobConcurrency(): number {
    return this.options.blobConcurrency ?? this.limits.blobConcurrency
  }

  /**
   * The repo a resumed pull already holds, if the source's head is still that commit (its
   * referenced blobs as recorded); otherwise undefined, and getRepo is pulled again.
   */
  private async heldRepo(t: InboundTransfer, client: SourceClient): Promise<VerifiedRepo | undefined> {
    if (!t.repo) return undefined
    const head = await this.retrying(t.transferId, () =>
      fetchStreaming(
        (signal) =>
          client.fetch(`/xrpc/com.atproto.sync.getLatestCommit?did=${encodeURIComponent(t.did)}`, { signal }),
        'getLatestCommit',
        this.limits.stallTimeoutMs,
        (_res, body) =>
          readJson(body, { maxBytes: MAX_JSON_BYTES, what: 'getLatestCommit', reason: 'SourceRefused' }),
      ),
    )
    if ((head as { cid?: unknown } | null)?.cid !== t.repo.commitCid) return undefined
    return {
      ...t.repo,
      records: t.progress.records,
      blobCids: new Set(await this.options.store.getReferencedBlobs(t.transferId)),
    }
  }

  /**
   * Pages through listBlobs from the recorded cursor, moving each page's blobs (bounded
   * parallelism) and recording the cursor once the page is wholly held or known missing.
   * Returns the CIDs listed by this pull.
   */
  private async listedBlobs(
    t: InboundTransfer,
    client: SourceClient,
    progress: TransferProgress,
    report: BlobListingReport,
  ): Promise<Set<string>> {
    const listed = new Set<string>()
    let cursor = (await this.options.store.get(t.transferId))?.blobCursor
    const limit = this.options.listBlobsLimit ?? 1000
    for (;;) {
      const query = new URLSearchParams({ did: t.did, limit: String(limit), ...(cursor && { cursor }) })
      const page = await this.retrying(t.transferId, () =>
        fetchStreaming(
          (signal) => client.fetch(`/xrpc/com.atproto.sync.listBlobs?${query}`, { signal }),
          'listBlobs',
          this.limits.stallTimeoutMs,
          async (_res, body) =>
            parseBlobPage(
              await readJson(body, { maxBytes: MAX_JSON_BYTES, what: 'listBlobs', reason: 'SourceRefused' }),
            ),
        ),
      )
      const fresh = page.cids.filter((cid) => !listed.has(cid))
      for (const cid of fresh) listed.add(cid)
      report.listed += fresh.length
      await forEachBounded(fresh, this.blobConcurrency, async (cid) => {
        if (await this.moveBlob(t.transferId, t.did, cid, client, progress, report)) progress.blobsReceived++
      })
      // A cursor that does not advance would page forever.
      if (fresh.length === 0 || !page.cursor || page.cursor === cursor) return listed
      cursor = page.cursor
      // The pages behind the cursor are not listed again: what of them could not be had goes with it.
      await this.options.store.update(t.transferId, {
        blobCursor: cursor,
        missingBlobs: [...new Set([...t.missingBlobs, ...report.missing.map((m) => m.cid)])],
        progress: { ...progress },
      })
    }
  }

  /** Moves one blob unless it is held; true if this call stored it. */
  private async moveBlob(
    transferId: string,
    did: string,
    cid: string,
    client: SourceClient,
    progress: TransferProgress,
    report: BlobListingReport,
  ): Promise<boolean> {
    if (await this.options.sink.hasBlob(did, cid)) {
      report.alreadyHeld++
      return false
    }
    const outcome: BlobFetchOutcome = await this.retrying(transferId, () =>
      fetchBlob({
        client,
        sink: this.options.sink,
        did,
        cid,
        maxBlobSize: this.limits.maxBlobSize,
        stallTimeoutMs: this.limits.stallTimeoutMs,
      }),
    )
    if ('missing' in outcome) {
      report.missing.push({ cid, why: outcome.missing })
      return false
    }
    report.fetched++
    progress.bytesReceived += outcome.stored
    return true
  }

  /** `withRetries` with this reader's policy, each wait recorded on the transfer. */
  private retrying<T>(transferId: string, attempt: () => Promise<T>): Promise<T> {
    const { retry } = this.limits
    const signal = this.signals.get(transferId)
    return withRetries(retry, attempt, async ({ attempt: n, delayMs, error }) => {
      // A cancelled or stopped pull is not retried: the abort was ours, not the source's.
      signal?.throwIfAborted()
      await this.options.store.update(transferId, {
        retry: {
          attempt: n,
          of: retry.attempts,
          nextAt: Date.now() + delayMs,
          lastFailure: toFailure(exhaustedFailure(error)),
        },
      })
    })
  }

  /** The source's service DID (describeServer), for the record; undefined if it will not say. */
  private async serviceDid(client: SourceClient): Promise<string | undefined> {
    const res = await client.fetch('/xrpc/com.atproto.server.describeServer').catch(() => undefined)
    if (!res?.ok) return undefined
    const body = (await res.json().catch(() => ({}))) as { did?: unknown }
    return typeof body.did === 'string' ? body.did : undefined
  }
}

/** The client with every request also aborted by `signal`. */
function abortable(client: SourceClient, signal: AbortSignal): SourceClient {
  return {
    url: client.url,
    fetch: (path, init) =>
      client.fetch(path, { ...init, signal: init?.signal ? AbortSignal.any([init.signal, signal]) : signal }),
  }
}

/** A listBlobs answer, checked: `cids` strings, `cursor` a string if present. */
function parseBlobPage(body: unknown): { cids: string[]; cursor?: string } {
  const page = body as { cids?: unknown; cursor?: unknown }
  if (!Array.isArray(page?.cids) || !page.cids.every((c) => typeof c === 'string')) {
    throw new ImportFailure('SourceRefused', 'listBlobs answered without a list of CIDs')
  }
  if (page.cursor !== undefined && typeof page.cursor !== 'string') {
    throw new ImportFailure('SourceRefused', 'listBlobs answered with a cursor that is not a string')
  }
  return { cids: page.cids, ...(page.cursor !== undefined && { cursor: page.cursor }) }
}
