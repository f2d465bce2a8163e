import { Readable } from 'node:stream'
import { lexToJson } from '@atproto/lex-json'
import {
  encodeSpaceRepoCar,
  type SignedSpaceCommit,
  type SpaceCredential,
  SpaceError,
  signSpaceCommit,
  spaceScopeAllows,
  verifyDpopProof,
  verifySpaceCredential,
} from '@pds-transfer/core'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { PermissionedRepoHost } from './permissioned-repo-host.ts'
import type { SpaceAuthVerifier } from './space-auth.ts'
import { authorizedSpace, sendSpaceError, spaceParams } from './space-xrpc.ts'

/** Options of {@link registerSpaceReadRoutes}. */
export interface SpaceReadRoutesOptions {
  host: PermissionedRepoHost
  auth: SpaceAuthVerifier
  /**
   * Accept space credentials (DPoP-bound, 0016 "Access control") on the repo reads: `resolveKey`
   * gives a space authority's verification key (`#atproto_space`, else `#atproto`) as a did:key,
   * `serviceUrl` is this host's public URL (the proofs' `htu`). Without it only OAuth is accepted.
   */
  credentials?: {
    resolveKey(authority: string): Promise<string>
    serviceUrl: string
    /**
     * Records a proof's `jti` until `expiresAt` (unix seconds) and says whether it is new. Default:
     * this process's memory; hosts with several workers give one shared store.
     */
    firstUse?(jti: string, expiresAt: number): boolean
  }
}

/**
 * The `com.atproto.space.*` read methods of a repo host that a move needs: listSpaces, getRepo,
 * getLatestCommit, listBlobs, getBlob. Authenticated by OAuth with a `space:` scope granting
 * `read_self` (or `read`) for the space, for the caller's own repo; or, given `credentials`, by a
 * DPoP-bound space credential for the space, for any repo in it (a syncer).
 */
export function registerSpaceReadRoutes(app: FastifyInstance, options: SpaceReadRoutesOptions): void {
  const { host, auth } = options

  const replay = new ProofReplayCache()

  /**
   * The space and repo a read names, refused unless a space credential for that space (any repo
   * in it), or an OAuth grant with `read_self` there (the caller's own repo only), allows it.
   */
  async function readableRepo(request: FastifyRequest, nsid: string) {
    const params = spaceParams(nsid, request.query)
    const space = String(params.space)
    const credential = await credentialOf(request)
    if (credential) {
      if (credential.space !== space)
        throw new SpaceError(
          'InsufficientScope',
          `the space credential is for ${credential.space}, not ${space}`,
        )
      return { params, space, did: String(params.repo) }
    }
    const caller = await auth.verify(request)
    authorizedSpace(caller, space, { action: 'read_self' })
    if (params.repo !== caller.did)
      throw new SpaceError('InsufficientScope', "an OAuth grant reads only the caller's own repo in a space")
    return { params, space, did: caller.did }
  }

  /** The request's space credential with its DPoP proof checked; `undefined` when it carries none. */
  async function credentialOf(request: FastifyRequest): Promise<SpaceCredential | undefined> {
    const header = request.headers.authorization
    if (!options.credentials || !header?.startsWith('DPoP ')) return undefined
    const token = header.slice('DPoP '.length)
    const credential = await verifySpaceCredential(token, (did) => resolveKey(did))
    if (!credential) return undefined
    const proof = request.headers.dpop
    if (typeof proof !== 'string')
      throw new SpaceError('AuthenticationRequired', 'a space credential needs a DPoP proof')
    verifyDpopProof(proof, {
      htm: request.method,
      htu: `${options.credentials.serviceUrl.replace(/\/$/, '')}${request.url.split('?')[0]}`,
      accessToken: token,
      jkt: credential.jkt,
      firstUse: (jti) => (options.credentials?.firstUse ?? replay.firstUse.bind(replay))(jti, credential.exp),
    })
    return credential
  }

  async function resolveKey(did: string): Promise<string> {
    try {
      return await (options.credentials as NonNullable<SpaceReadRoutesOptions['credentials']>).resolveKey(did)
    } catch (err) {
      throw new SpaceError('AuthenticationRequired', `the space authority ${did} could not be resolved`, {
        cause: err,
      })
    }
  }

  app.get('/xrpc/com.atproto.space.listSpaces', async (request, reply) => {
    try {
      const caller = await auth.verify(request)
      const params = spaceParams('com.atproto.space.listSpaces', request.query)
      const type = params.type === undefined ? undefined : String(params.type)
      const authority = params.did === undefined ? undefined : String(params.did)
      // 0016 names no scope for listSpaces; as the alpha PDS does, the filters are the target: an
      // unfiltered listing needs a read_self grant with type and authority `*` (spec/permissioned-data.md).
      const target = { type: type ?? '*', authority: authority ?? '*', skey: '*' }
      if (!spaceScopeAllows(caller.scopes, caller.did, target, { action: 'read_self' }))
        throw new SpaceError(
          'InsufficientScope',
          `no space: scope grants read_self over type ${target.type}, authority ${target.authority}`,
        )
      const page = await host.listSpaces(caller.did, {
        limit: params.limit as number,
        ...(type !== undefined && { type }),
        ...(authority !== undefined && { authority }),
        ...(params.cursor !== undefined && { cursor: String(params.cursor) }),
      })
      return reply.send({
        spaces: page.spaces.map((uri) => ({ uri })),
        ...(page.cursor && { cursor: page.cursor }),
      })
    } catch (err) {
      return sendSpaceError(reply, err)
    }
  })

  app.get('/xrpc/com.atproto.space.getLatestCommit', async (request, reply) => {
    try {
      const { space, did } = await readableRepo(request, 'com.atproto.space.getLatestCommit')
      const head = await host.repoHead(space, did)
      if (!head) throw new SpaceError('RepoNotFound', `${did} holds no repo in ${space}`)
      const commit = await sign(space, did, head)
      return reply.send({ commit: lexToJson(commit as never) })
    } catch (err) {
      return sendSpaceError(reply, err)
    }
  })

  app.get('/xrpc/com.atproto.space.getRepo', async (request, reply) => {
    try {
      const { space, did, params } = await readableRepo(request, 'com.atproto.space.getRepo')
      const repo = await host.readRepo(space, did)
      if (!repo) throw new SpaceError('RepoNotFound', `${did} holds no repo in ${space}`)
      const commit = await sign(space, did, repo)
      const car = await encodeSpaceRepoCar(commit, repo.records, {
        excludeValues: params.excludeValues === true,
      })
      return reply.type('application/vnd.ipld.car').send(Buffer.from(car))
    } catch (err) {
      return sendSpaceError(reply, err)
    }
  })

  app.get('/xrpc/com.atproto.space.listBlobs', async (request, reply) => {
    try {
      const { space, did, params } = await readableRepo(request, 'com.atproto.space.listBlobs')
      const page = await host.listBlobs(space, did, {
        limit: params.limit as number,
        ...(params.cursor !== undefined && { cursor: String(params.cursor) }),
      })
      if (!page) throw new SpaceError('RepoNotFound', `${did} holds no repo in ${space}`)
      return reply.send({ cids: page.cids, ...(page.cursor && { cursor: page.cursor }) })
    } catch (err) {
      return sendSpaceError(reply, err)
    }
  })

  app.get('/xrpc/com.atproto.space.getBlob', async (request, reply) => {
    try {
      const { space, did, params } = await readableRepo(request, 'com.atproto.space.getBlob')
      const blob = await host.openBlob(space, did, String(params.cid))
      if (!blob)
        throw new SpaceError('BlobNotFound', `no blob ${String(params.cid)} in ${did}'s repo in ${space}`)
      return reply
        .type(blob.mimeType ?? 'application/octet-stream')
        .header('content-length', blob.size)
        .send(Readable.from(blob.bytes))
    } catch (err) {
      return sendSpaceError(reply, err)
    }
  })

  async function sign(
    space: string,
    did: string,
    head: { rev: string; hash: Uint8Array },
  ): Promise<SignedSpaceCommit> {
    const signer = host.signer(did)
    if (!signer) throw new SpaceError('RepoNotFound', `${did} has no signing key here`)
    return signSpaceCommit({ space, author: did, rev: head.rev }, head.hash, signer)
  }
}

/** DPoP `jti`s seen, each kept until its credential expires (a proof is single-use). */
class ProofReplayCache {
  private readonly seen = new Map<string, number>()

  firstUse(jti: string, expiresAt: number): boolean {
    const now = Date.now() / 1000
    for (const [id, exp] of this.seen) if (exp <= now) this.seen.delete(id)
    if (this.seen.has(jti)) return false
    this.seen.set(jti, expiresAt)
    return true
  }
}
