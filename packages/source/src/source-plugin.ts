import { Readable } from 'node:stream'
import type { Keypair } from '@atproto/crypto'
import * as plc from '@did-plc/lib'
import {
  buildWellKnown,
  commonExtensions,
  EXTENSION,
  EXTENSIONS_HEADER,
  FrameEncoder,
  formatSizeHint,
  isDraftExportRequest,
  MAX_FRAME_PLAINTEXT,
  NSID,
  parseTransferPublicJwk,
  SIZE_HINT_HEADER,
  type SizeHint,
  setupSender,
  type TransferAlgorithm,
  TransferError,
  validateCompleteTransferInput,
  validateExportAccountInput,
  validateGetTransferStatusParams,
  validateRequestPlcTokenInput,
  WELL_KNOWN_CACHE_CONTROL,
  WELL_KNOWN_PATH,
  WireError,
} from '@pds-transfer/core'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { AccountSource } from './account-source.ts'
import { SourceCompletionFlow } from './complete-transfer.ts'
import { DestinationKeys } from './destination-keys.ts'
import { answerDraftExport, offeredDraftCapabilities } from './draft-export.ts'
import { exportFrames } from './export-frames.ts'
import { exportSize } from './export-size.ts'
import type { PermissionedRepoHost } from './permissioned-repo-host.ts'
import type { SimpleSpaceHost } from './simplespace-host.ts'
import { registerSimpleSpaceRoutes } from './simplespace-routes.ts'
import type { SpaceAuthVerifier } from './space-auth.ts'
import { registerSpaceReadRoutes } from './space-read-routes.ts'
import type { TransferAuthVerifier } from './transfer-auth.ts'
import type { SourceTransfer, SourceTransferStore } from './transfer-store.ts'
import { sendXrpcError } from './xrpc-reply.ts'

export interface SourcePluginOptions {
  source: AccountSource
  store: SourceTransferStore
  auth: TransferAuthVerifier
  /** This PDS's service DID, published in its well-known document. */
  serviceDid: string
  /** PLC directory and the rotation key this PDS holds for its accounts (signs completeTransfer's operation). */
  plc: { directoryUrl: string; rotationKey: Keypair }
  /** Checks encryption keys against the destination's well-known document (decision 4). */
  destinationKeys?: DestinationKeys
  /** Suites offered, in preference order (default HPKE-3, HPKE-4). */
  algorithms?: TransferAlgorithm[]
  /** Serve `/.well-known/atproto-transfer` (default true; turn off when the destination plugin serves it). */
  serveWellKnown?: boolean
  /**
   * Serve `com.atproto.sync.getBlob` from the `AccountSource` for reconciliation (default true;
   * turn off where the PDS serves it itself).
   */
  serveGetBlob?: boolean
  /** Max new exports per destination (OAuth client) per hour; the proposal recommends 10. */
  exportsPerDestinationPerHour?: number
  /** Transfers without progress this long are cancelled (default 24 h, as the proposal recommends). */
  noProgressTimeoutMs?: number
  /** How long a transferred account's data is kept after deactivation (default 30 days). */
  retentionMs?: number
  /**
   * How long an account deactivated by completeTransfer waits for its move to reach PLC
   * before this source takes it back: supersedes the signed operation and reactivates
   * (default 1 hour; spec/completion.md).
   */
  reclaimAfterMs?: number
  /** Target blobpack frame size in bytes (default 32 MiB). */
  blobpackTarget?: number
  /**
   * Largest frame plaintext this source sends (default: what the uint32 `ciphertext_length`
   * allows). A blob that cannot fit one frame is left to the destination's getBlob
   * reconciliation (decision D4, erratum E7).
   */
  maxFramePlaintext?: number
  /**
   * Wire extensions offered (spec/extensions.md; default: all we implement). `[]` makes this
   * a literal 0014 source, for interoperability tests.
   */
  extensions?: string[]
  /**
   * Which `exportAccount` this source answers (default both): `v1`, the encrypted stream;
   * `draft`, the current draft's JSON export (spec/dialect-draft.md). A source serving only the
   * draft publishes no well-known document (`serveWellKnown: false`), as a draft source would not.
   */
  dialects?: ('v1' | 'draft')[]
  /**
   * Capabilities offered to a draft destination (default: base, preferences, resumable, and
   * permissioned-data when `spaces` is given; never permissioned-data without it).
   */
  draftCapabilities?: string[]
  /**
   * The account's permissioned data (proposal 0016): serve `com.atproto.space.*` reads and
   * `com.atproto.simplespace.*` from these hosts, and offer the draft's `permissioned-data`.
   */
  spaces?: { host: PermissionedRepoHost; simplespace: SimpleSpaceHost; auth: SpaceAuthVerifier }
  now?: () => number
}

const HOUR = 3600_000

/** An export that passed every check: its record is stored and its body is ready to stream. */
interface StartedExport {
  transfer: SourceTransfer
  body: AsyncGenerator<Uint8Array>
  /** base64url `enc` for `Atproto-Transfer-Enc`. */
  enc: string
  algorithm: TransferAlgorithm
  /** Extensions applied to this stream, confirmed in the response header. */
  extensions: string[]
  /** Email the PLC token once the data has left (not again for a resumed or catch-up export). */
  sendPlcToken: boolean
  /** Extension `size-hint`: what this stream will carry, sent as a header. */
  sizeHint?: SizeHint
}

/**
 * The sending side of proposal 0014 as a fastify plugin: discovery,
 * exportAccount (streamed, HPKE-encrypted), completeTransfer, getTransferStatus.
 */
export const sourcePlugin = fp(
  async (app: FastifyInstance, opts: SourcePluginOptions) => {
    const now = opts.now ?? Date.now
    const algorithms = opts.algorithms ?? ['HPKE-3', 'HPKE-4']
    const destinationKeys = opts.destinationKeys ?? new DestinationKeys({ now })
    const plcClient = new plc.Client(opts.plc.directoryUrl)
    const running = new Map<string, AbortController>()
    const extensions = opts.extensions ?? [
      EXTENSION.endManifest,
      EXTENSION.resume,
      EXTENSION.plcTokenRefresh,
      EXTENSION.sizeHint,
      EXTENSION.repoDiff,
    ]
    const completion = new SourceCompletionFlow({
      source: opts.source,
      store: opts.store,
      plc: plcClient,
      rotationKey: opts.plc.rotationKey,
      retentionMs: opts.retentionMs ?? 30 * 24 * HOUR,
      reclaimAfterMs: opts.reclaimAfterMs ?? HOUR,
      now,
    })
    /** When each transfer last had a token re-sent (a user clicking twice is not two emails). */
    const tokenResent = new Map<string, number>()

    if (opts.serveWellKnown ?? true) {
      app.get(WELL_KNOWN_PATH, async (_req, reply) => {
        reply.header('cache-control', WELL_KNOWN_CACHE_CONTROL)
        return buildWellKnown({
          did: opts.serviceDid,
          algorithms,
          keys: [],
          extensions,
          now: Math.floor(now() / 1000),
        })
      })
    }

    if (opts.serveGetBlob ?? true) {
      app.get('/xrpc/com.atproto.sync.getBlob', async (request, reply) => {
        const { did, cid } = request.query as { did?: unknown; cid?: unknown }
        if (typeof did !== 'string' || typeof cid !== 'string') {
          return sendXrpcError(reply, new TransferError('InvalidRequest', 'did and cid are required'))
        }
        const account = await opts.source.getAccount(did)
        if (!account)
          return reply.code(404).send({ error: 'RepoNotFound', message: `${did} is not hosted here` })
        if (account.status !== 'active' && !(await pausedForCaller(request, reply, did))) {
          return reply.code(400).send({ error: 'RepoDeactivated', message: `${did} is ${account.status}` })
        }
        const body = await opts.source.openBlob(did, cid)
        if (!body) return reply.code(404).send({ error: 'BlobNotFound', message: `no blob ${cid}` })
        reply.header('content-type', 'application/octet-stream')
        return reply.send(Readable.from(body))
      })
    }

    /**
     * Whether the account is paused by completeTransfer for the caller's own transfer: its
     * destination still fetches, by getBlob, blobs written before the pause that its catch-up
     * stream skipped (they sort before its cursor). Nobody else reads a paused account (C9).
     */
    async function pausedForCaller(request: FastifyRequest, reply: FastifyReply, did: string) {
      if (!request.headers.authorization) return false
      try {
        const caller = await opts.auth.verify(request, 'com.atproto.sync.getBlob', reply)
        const transfer = await opts.store.findActive(did)
        return (
          caller.did === did &&
          transfer?.clientId === caller.clientId &&
          transfer.completion?.deactivatedAt !== undefined
        )
      } catch {
        return false
      }
    }

    const dialects = opts.dialects ?? ['v1', 'draft']
    const draftCapabilities = offeredDraftCapabilities(opts.draftCapabilities, opts.spaces !== undefined)
    if (opts.spaces) {
      registerSpaceReadRoutes(app, { host: opts.spaces.host, auth: opts.spaces.auth })
      registerSimpleSpaceRoutes(app, { host: opts.spaces.simplespace, auth: opts.spaces.auth })
    }
    app.post(`/xrpc/${NSID.exportAccount}`, async (request, reply) => {
      let started: StartedExport
      try {
        // One NSID, two calls: the body's shape says which (spec/dialect-draft.md, "One NSID").
        if (isDraftExportRequest(request.body)) {
          if (!dialects.includes('draft')) {
            throw new TransferError(
              'InvalidRequest',
              'this source serves the encrypted stream only: send algorithm and encryptionKey',
            )
          }
          // Private state: never cached by anything between the two servers.
          reply.header('cache-control', 'no-store')
          return await answerDraftExport(request, reply, {
            source: opts.source,
            store: opts.store,
            auth: opts.auth,
            capabilities: draftCapabilities,
            exportsPerDestinationPerHour: opts.exportsPerDestinationPerHour ?? 10,
            supersede: (id, reason) => running.get(id)?.abort(new Error(reason)),
            now,
          })
        }
        if (!dialects.includes('v1')) {
          throw new TransferError(
            'InvalidRequest',
            "this source serves the draft's JSON export only: send did, transferId and capabilities",
          )
        }
        started = await startExport(request, reply)
      } catch (err) {
        return sendXrpcError(reply, err)
      }
      return streamExport(request, reply, started)
    })

    async function startExport(request: FastifyRequest, reply: FastifyReply): Promise<StartedExport> {
      const input = validateExportAccountInput(request.body)
      const caller = await opts.auth.verify(request, NSID.exportAccount, reply)
      if (caller.did !== input.did) {
        throw new TransferError('TransferNotAuthorized', 'the token was issued for another account')
      }
      if (!(algorithms as string[]).includes(input.algorithm)) {
        throw new TransferError(
          'InvalidRequest',
          `algorithm ${input.algorithm} is not supported (${algorithms.join(', ')})`,
        )
      }
      const key = asInvalidRequest(() =>
        parseTransferPublicJwk(input.encryptionKey, { now: Math.floor(now() / 1000) }),
      )
      if (key.alg !== input.algorithm) {
        throw new TransferError('InvalidRequest', `encryptionKey is for ${key.alg}, not ${input.algorithm}`)
      }
      const account = await opts.source.getAccount(input.did)
      if (!account) throw new TransferError('AccountNotFound', `${input.did} is not hosted here`)
      const previous = await opts.store.get(input.transferId)
      if (previous && (previous.did !== input.did || previous.clientId !== caller.clientId)) {
        throw new TransferError('InvalidRequest', 'transferId is already used by another transfer')
      }
      // Paused by completeTransfer for this very transfer: its destination fetches the changes
      // written before the pause (spec/completion.md, C9). Nobody else reads a paused account.
      const pausedForThis =
        account.status === 'deactivated' && previous?.completion?.deactivatedAt !== undefined
      if (account.status !== 'active' && !pausedForThis) {
        throw new TransferError('AccountDeactivated', `${input.did} is ${account.status}`)
      }
      const applied = commonExtensions(extensions, input.extensions)
      // A resumed or catch-up export of a transfer whose data already left once: the user has
      // a token; another email would only confuse.
      const tokenSent = previous?.status === 'importing' || previous?.status === 'completing'
      if (input.resume && !applied.includes(EXTENSION.resume)) {
        throw new TransferError('InvalidRequest', 'resume needs the resume extension')
      }
      if (input.resume && !previous) {
        throw new TransferError('TransferNotFound', `no transfer ${input.transferId} to resume`)
      }
      if (previous?.status === 'completed') {
        throw new TransferError('InvalidRequest', `transfer ${input.transferId} is already completed`)
      }
      const active = await opts.store.findActive(input.did)
      if (active && active.clientId !== caller.clientId) {
        throw new TransferError(
          'TransferAlreadyActive',
          // Not its transferId: that is the other destination's capability (decision D14).
          `another destination is transferring ${input.did}`,
        )
      }
      if (!previous) {
        const recent = await opts.store.countCreatedSince(caller.clientId, now() - HOUR)
        if (recent >= (opts.exportsPerDestinationPerHour ?? 10)) {
          throw new TransferError(
            'RateLimitExceeded',
            `${recent} exports for this destination in the last hour`,
          )
        }
      }
      await destinationKeys.assertPublished(caller.clientId, key)
      // The same destination starting over or resuming (after a failure on its side) replaces
      // its earlier attempt, even one whose broken connection we have not noticed yet.
      if (active && active.transferId === input.transferId) {
        running.get(active.transferId)?.abort(new Error('replaced by a new request for the same transfer'))
      } else if (active) {
        running.get(active.transferId)?.abort(new Error(`superseded by ${input.transferId}`))
        await opts.store.update(active.transferId, {
          status: 'failed',
          error: `superseded by ${input.transferId}`,
          updatedAt: now(),
        })
      }

      // Extension repo-diff: the destination holds the repo at resume.repoRev, so a moved head
      // needs only what was written since (the source may still send it whole).
      const since = applied.includes(EXTENSION.repoDiff) ? input.resume?.repoRev : undefined
      const snapshot = await opts.source.snapshotRepo(input.did, since === undefined ? {} : { since })
      try {
        const { enc, keys } = await setupSender({
          algorithm: key.alg,
          recipientPublicKey: Uint8Array.from(Buffer.from(key.x, 'base64url')),
          did: input.did,
          transferId: input.transferId,
        })
        const fields = {
          clientId: caller.clientId,
          algorithm: key.alg,
          status: 'exporting' as const,
          exportedRev: snapshot.rev,
          framesSent: 0,
          bytesSent: 0,
          blobsSent: 0,
          updatedAt: now(),
        }
        if (previous) await opts.store.update(input.transferId, { ...fields, error: undefined })
        else
          await opts.store.create({
            transferId: input.transferId,
            did: input.did,
            createdAt: now(),
            ...fields,
          })
        const transfer = (await opts.store.get(input.transferId))!
        // A resumed export leaves out what the destination verified: the CAR if the head has
        // not moved, and the blobs up to its cursor (reconciliation covers anything newer).
        const scope = {
          skipRepo: input.resume?.repoCommit === snapshot.commitCid,
          ...(input.resume?.blobCursor !== undefined && { blobCursor: input.resume.blobCursor }),
          source: opts.source,
          did: input.did,
          snapshot,
        }
        const sizeHint = applied.includes(EXTENSION.sizeHint)
          ? await exportSize({ ...scope, maxFramePlaintext: opts.maxFramePlaintext ?? MAX_FRAME_PLAINTEXT })
          : undefined
        const body = exportFrames({
          ...scope,
          endManifest: applied.includes(EXTENSION.endManifest),
          encoder: new FrameEncoder(keys),
          ...(opts.blobpackTarget !== undefined && { blobpackTarget: opts.blobpackTarget }),
          ...(opts.maxFramePlaintext !== undefined && { maxFramePlaintext: opts.maxFramePlaintext }),
          onProgress: (p) => {
            void opts.store.update(input.transferId, {
              framesSent: p.frames,
              bytesSent: p.bytes,
              blobsSent: p.blobs,
              updatedAt: now(),
            })
          },
        })
        return {
          transfer,
          body: releasing(body, () => snapshot.release()),
          enc: Buffer.from(enc).toString('base64url'),
          algorithm: key.alg,
          extensions: applied,
          sendPlcToken: !tokenSent,
          ...(sizeHint && { sizeHint }),
        }
      } catch (err) {
        await snapshot.release()
        throw err
      }
    }

    function streamExport(request: FastifyRequest, reply: FastifyReply, started: StartedExport) {
      const { transfer, body } = started
      const abort = new AbortController()
      running.set(transfer.transferId, abort)
      const id = transfer.transferId
      let finished = false
      const current = () => running.get(id) === abort
      async function* tracked() {
        try {
          for await (const chunk of body) {
            if (abort.signal.aborted) throw abort.signal.reason
            yield chunk
          }
          finished = true
          await opts.store.update(id, { status: 'importing', updatedAt: now() })
          // Decision 8: the token is sent once the data has left, not at the start of a long export.
          if (started.sendPlcToken) {
            await opts.source.requestPlcToken(transfer.did).catch((err: unknown) => {
              request.log.warn({ err }, 'could not send the PLC token')
            })
          }
        } catch (err) {
          request.log.warn({ err, transferId: id }, 'export failed after the response started')
          if (current())
            await opts.store.update(id, { status: 'failed', error: describe(err), updatedAt: now() })
          throw err
        } finally {
          // A stream replaced by a new request for the same transfer must not touch its record.
          if (current()) running.delete(id)
          if (!finished && !abort.signal.aborted) {
            await opts.store.update(id, {
              status: 'failed',
              error: 'destination disconnected',
              updatedAt: now(),
            })
          }
        }
      }
      const stream = Readable.from(tracked(), { objectMode: false, highWaterMark: 1 << 20 })
      // An error after the 200 must reset the connection: a clean end would look like a complete stream.
      stream.on('error', () => reply.raw.destroy())
      // A reader that stopped reading leaves the generator parked on backpressure, where a flag
      // is never seen: an abort (supersede, stall, shutdown) destroys the stream itself.
      abort.signal.addEventListener('abort', () => stream.destroy(abort.signal.reason), { once: true })
      if (started.extensions.length > 0) reply.header(EXTENSIONS_HEADER, started.extensions.join(', '))
      if (started.sizeHint) reply.header(SIZE_HINT_HEADER, formatSizeHint(started.sizeHint))
      return reply
        .code(200)
        .header('content-type', 'application/octet-stream')
        .header('cache-control', 'no-store')
        .header('atproto-transfer-enc', started.enc)
        .header('atproto-transfer-algorithm', started.algorithm)
        .send(stream)
    }

    app.post(`/xrpc/${NSID.completeTransfer}`, async (request, reply) => {
      try {
        const input = validateCompleteTransferInput(request.body)
        const caller = await opts.auth.verify(request, NSID.completeTransfer, reply)
        if (caller.did !== input.did) {
          throw new TransferError('TransferNotAuthorized', 'the token was issued for another account')
        }
        const signedPlcOperation = await completion.complete(input, caller)
        return { signedPlcOperation }
      } catch (err) {
        return sendXrpcError(reply, err)
      }
    })

    if (extensions.includes(EXTENSION.plcTokenRefresh)) {
      app.post(`/xrpc/${NSID.requestPlcToken}`, async (request, reply) => {
        try {
          const input = validateRequestPlcTokenInput(request.body)
          const caller = await opts.auth.verify(request, NSID.requestPlcToken, reply)
          if (caller.did !== input.did) {
            throw new TransferError('TransferNotAuthorized', 'the token was issued for another account')
          }
          const transfer = await opts.store.get(input.transferId)
          if (!transfer || transfer.did !== input.did || transfer.clientId !== caller.clientId) {
            throw new TransferError(
              'TransferNotFound',
              `no transfer ${input.transferId} of ${input.did} by this client`,
            )
          }
          // A signed move that has not reached PLC yet is still finished with a code.
          if (transfer.status === 'completed' && (await completion.moved(transfer))) {
            throw new TransferError('AccountDeactivated', `${input.did} has already moved`)
          }
          // Only once the data has left, as for the first token (decision 8); also while a
          // completion that has not signed is interrupted (its code may be spent).
          if (!['importing', 'completing', 'completed'].includes(transfer.status)) {
            throw new TransferError('TransferNotFound', `transfer ${input.transferId} has no finished export`)
          }
          const last = tokenResent.get(input.transferId) ?? 0
          if (now() - last < 60_000) {
            throw new TransferError('RateLimitExceeded', 'a code was sent less than a minute ago')
          }
          tokenResent.set(input.transferId, now())
          await opts.source.requestPlcToken(input.did)
          await completion.codeSent(input.transferId)
          return reply.code(200).send({})
        } catch (err) {
          return sendXrpcError(reply, err)
        }
      })
    }

    app.get(`/xrpc/${NSID.getTransferStatus}`, async (request, reply) => {
      try {
        const params = validateGetTransferStatusParams(request.query)
        const caller = await opts.auth.verify(request, NSID.getTransferStatus, reply)
        const transfer = await opts.store.get(params.transferId)
        if (!transfer || transfer.did !== caller.did || transfer.clientId !== caller.clientId) {
          throw new TransferError('TransferNotFound', `no transfer ${params.transferId} by this client`)
        }
        return {
          transferId: transfer.transferId,
          did: transfer.did,
          status: transfer.status,
          progress: {
            framesReceived: transfer.framesSent,
            bytesReceived: transfer.bytesSent,
            blobsReceived: transfer.blobsSent,
          },
          ...(transfer.error !== undefined && { error: 'ExportFailed', message: transfer.error }),
        }
      } catch (err) {
        return sendXrpcError(reply, err)
      }
    })

    const sweep = setInterval(
      () => {
        void cancelStale().catch((err: unknown) => app.log.error({ err }, 'stale transfer sweep failed'))
        void completion
          .reclaim()
          .catch((err: unknown) => app.log.error({ err }, 'reclaiming abandoned moves failed'))
      },
      Math.min(opts.noProgressTimeoutMs ?? 24 * HOUR, 60_000),
    )
    sweep.unref()
    // preClose: onClose would wait for the exports' connections to end first.
    app.addHook('preClose', async () => {
      clearInterval(sweep)
      for (const abort of running.values()) abort.abort(new Error('server closing'))
    })

    /** Cancels transfers without progress for the configured time (section "Denial of Service"). */
    async function cancelStale() {
      for (const t of await opts.store.listStale(now() - (opts.noProgressTimeoutMs ?? 24 * HOUR))) {
        running.get(t.transferId)?.abort(new Error('no progress'))
        await opts.store.update(t.transferId, {
          status: 'failed',
          error: 'cancelled: no progress',
          updatedAt: now(),
        })
      }
    }
    app.decorate('cancelStaleTransfers', cancelStale)
    app.decorate('reclaimAbandonedTransfers', () => completion.reclaim())

    app.setErrorHandler((err, _request, reply) => {
      // Body parsing errors (malformed JSON, wrong content type) are the client's: InvalidRequest.
      const status = (err as { statusCode?: number }).statusCode ?? 500
      if (status >= 400 && status < 500) {
        return sendXrpcError(reply, new TransferError('InvalidRequest', (err as Error).message))
      }
      return sendXrpcError(reply, err)
    })
  },
  { name: '@pds-transfer/source', fastify: '5.x' },
)

function asInvalidRequest<T>(fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    if (err instanceof WireError) throw new TransferError('InvalidRequest', err.message, { cause: err })
    throw err
  }
}

async function* releasing<T>(inner: AsyncGenerator<T>, release: () => Promise<void>): AsyncGenerator<T> {
  try {
    yield* inner
  } finally {
    await release()
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
