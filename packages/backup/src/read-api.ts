/**
 * The backup service's read API: the sync endpoints a PDS serves, answered from archives, so
 * goat, a restore into our destination (a plain-PDS pull) or any tool that reads a PDS can read
 * a backup. Served for archives the service can open (the operator's key). Every request is
 * authorized as the account itself (a service-auth JWT: `iss` the account, `aud` this service,
 * `lxm` the method, not expired, signed with the DID document's key) or with the operator's
 * token. Errors are XRPC error bodies; nothing here writes to an archive.
 *
 * The account's preferences (`app.bsky.actor.getPreferences`) and email
 * (`com.atproto.server.getSession`, with only `did`, `email` and `emailConfirmed`) are served
 * too, where the backup holds them, so that a restore pulls the whole account from here with the
 * same reader as from a PDS. A PDS answers these for the signed-in account; here, as on every
 * route, the account is the `did` parameter (spec/archive-format.md, "Read API").
 */
import { timingSafeEqual } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { AuthRequiredError, InvalidRequestError, verifyJwt, XRPCError } from '@atproto/xrpc-server'
import {
  AccountArchive,
  type ArchiveKeys,
  type ArchiveState,
  type ArchiveStore,
  encryptionPrivateKey,
  OBJECT_TYPE,
} from '@pds-transfer/archive'
import type { DidResolver } from '@pds-transfer/destination'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { writeRepoCar } from './repo-car-file.ts'

export interface ReadApiOptions {
  store: ArchiveStore
  /** The archive key with its decryption part (the service serves what it can open). */
  keys: ArchiveKeys
  /** Resolves an account's DID document, for the signing key of its service-auth JWTs. */
  resolver: DidResolver
  /** This service's DID: the `aud` every service-auth JWT must carry. */
  serviceDid: string
  /** A bearer token that reads every archive (the operator's). */
  operatorToken?: string
  /** Temporary files (a repo CAR being served). */
  workDir: string
}

const NSID = {
  getLatestCommit: 'com.atproto.sync.getLatestCommit',
  getRepoStatus: 'com.atproto.sync.getRepoStatus',
  getRepo: 'com.atproto.sync.getRepo',
  getBlob: 'com.atproto.sync.getBlob',
  listBlobs: 'com.atproto.sync.listBlobs',
  getPreferences: 'app.bsky.actor.getPreferences',
  getSession: 'com.atproto.server.getSession',
} as const

/** The read API as a fastify plugin (routes under `/xrpc/`). */
export const backupReadApi = fp(
  async (app: FastifyInstance, opts: ReadApiOptions) => {
    encryptionPrivateKey(opts.keys) // refuse to start with a key that cannot open the archives

    /** The account's verified archive state, after the caller is authorized for it. */
    async function archiveFor(
      request: FastifyRequest,
      nsid: string,
    ): Promise<{
      archive: AccountArchive
      state: ArchiveState & { latest: NonNullable<ArchiveState['latest']> }
    }> {
      const did = String((request.query as { did?: unknown }).did ?? '')
      if (!did.startsWith('did:')) throw new InvalidRequestError('did is required (a DID)')
      await authorize(request, did, nsid)
      const archive = new AccountArchive(opts.store, opts.keys, did)
      const state = await archive.load()
      if (!state.latest) throw new InvalidRequestError(`no backup of ${did} here`, 'RepoNotFound')
      return { archive, state: { ...state, latest: state.latest } }
    }

    async function authorize(request: FastifyRequest, did: string, nsid: string): Promise<void> {
      const header = request.headers.authorization ?? ''
      if (!header.startsWith('Bearer '))
        throw new AuthRequiredError(
          'a backup is read with a service-auth token of its account, or the operator token',
        )
      const token = header.slice('Bearer '.length).trim()
      if (opts.operatorToken && sameSecret(token, opts.operatorToken)) return
      if (token.split('.').length !== 3) throw new AuthRequiredError('not a service-auth JWT', 'InvalidToken')
      const payload = await verifyJwt(token, opts.serviceDid, nsid, async (iss) => {
        return (await opts.resolver.resolve(iss.split('#')[0] as string)).signingKey
      })
      if (payload.iss.split('#')[0] !== did)
        throw new AuthRequiredError(`this token is ${payload.iss}'s, not ${did}'s`, 'InvalidToken')
    }

    app.get(`/xrpc/${NSID.getLatestCommit}`, async (request) => {
      const { state } = await archiveFor(request, NSID.getLatestCommit)
      return { cid: state.latest.repo.commitCid, rev: state.latest.repo.rev }
    })

    app.get(`/xrpc/${NSID.getRepoStatus}`, async (request) => {
      const { archive, state } = await archiveFor(request, NSID.getRepoStatus)
      return { did: archive.did, active: true, rev: state.latest.repo.rev }
    })

    // The whole repo at the latest backup, whatever `since` asks: a superset of any diff, which a
    // reader verifying over what it holds accepts as well.
    app.get(`/xrpc/${NSID.getRepo}`, async (request, reply) => {
      const { archive, state } = await archiveFor(request, NSID.getRepo)
      const dir = await mkdtemp(join(opts.workDir, 'serve-'))
      const path = join(dir, 'repo.car')
      try {
        await writeRepoCar(archive, state, path, opts.workDir)
      } catch (err) {
        await rm(dir, { recursive: true, force: true })
        throw err
      }
      const body = createReadStream(path)
      body.on('close', () => void rm(dir, { recursive: true, force: true }))
      return reply.type('application/vnd.ipld.car').send(body)
    })

    app.get(`/xrpc/${NSID.getBlob}`, async (request, reply) => {
      const { archive, state } = await archiveFor(request, NSID.getBlob)
      const cid = String((request.query as { cid?: unknown }).cid ?? '')
      const entry = state.blobs.get(cid)
      if (!entry) throw new InvalidRequestError(`no blob ${cid} in the backup`, 'BlobNotFound')
      return reply
        .type('application/octet-stream')
        .header('content-length', entry.object.plainSize)
        .send(Readable.from(archive.read(entry.object, OBJECT_TYPE.blob)))
    })

    app.get(`/xrpc/${NSID.listBlobs}`, async (request) => {
      const { state } = await archiveFor(request, NSID.listBlobs)
      const query = request.query as { cursor?: unknown; limit?: unknown }
      const limit = Math.min(Math.max(Number(query.limit ?? 500) || 500, 1), 1000)
      const cursor = typeof query.cursor === 'string' ? query.cursor : ''
      const cids = [...state.blobs.keys()]
        .sort()
        .filter((c) => c > cursor)
        .slice(0, limit)
      return { cids, ...(cids.length === limit && { cursor: cids.at(-1) }) }
    })

    app.get(`/xrpc/${NSID.getPreferences}`, async (request) => {
      const { archive, state } = await archiveFor(request, NSID.getPreferences)
      if (!state.latest.preferences)
        throw new InvalidRequestError(
          `the backup of ${archive.did} has no preferences (it was made without the account's sign-in)`,
          'PreferencesNotBackedUp',
        )
      return { preferences: await archive.readPreferences(state.latest.preferences) }
    })

    app.get(`/xrpc/${NSID.getSession}`, async (request) => {
      const { archive, state } = await archiveFor(request, NSID.getSession)
      const account = state.latest.accountState
        ? await archive.readAccountState(state.latest.accountState)
        : {}
      // Only what the backup holds: an email when it was granted, nothing invented.
      return {
        did: archive.did,
        ...(account.email !== undefined && { email: account.email }),
        ...(account.emailConfirmed !== undefined && { emailConfirmed: account.emailConfirmed }),
      }
    })

    app.setErrorHandler((err, _request, reply: FastifyReply) => {
      const xrpc = err instanceof XRPCError ? err : undefined
      if (xrpc) return reply.code(xrpc.statusCode).send(xrpc.payload)
      const status = (err as { statusCode?: number }).statusCode
      if (status && status < 500)
        return reply.code(400).send({ error: 'InvalidRequest', message: (err as Error).message })
      // An archive that fails its checks is the operator's problem; the reader gets no details of it.
      app.log.error(err)
      return reply.code(500).send({ error: 'InternalServerError', message: 'the backup could not be read' })
    })
  },
  { name: '@pds-transfer/backup/read-api', fastify: '5.x' },
)

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}
