import { Readable } from 'node:stream'
import { lexToJson } from '@atproto/lex-json'
import {
  encodeSpaceRepoCar,
  type SignedSpaceCommit,
  SpaceError,
  signSpaceCommit,
  spaceScopeAllows,
} from '@pds-transfer/core'
import type { FastifyInstance } from 'fastify'
import type { PermissionedRepoHost } from './permissioned-repo-host.ts'
import type { SpaceAuthVerifier } from './space-auth.ts'
import { authorizedSpace, sendSpaceError, spaceParams } from './space-xrpc.ts'

/** Options of {@link registerSpaceReadRoutes}. */
export interface SpaceReadRoutesOptions {
  host: PermissionedRepoHost
  auth: SpaceAuthVerifier
}

/**
 * The `com.atproto.space.*` read methods of a repo host that a move needs: listSpaces, getRepo,
 * getLatestCommit, listBlobs, getBlob. Authenticated by OAuth with a `space:` scope granting
 * `read_self` (or `read`) for the space, and only for the caller's own repo: a space credential
 * (DPoP-bound, for other readers of the space) is not served yet (spec/permissioned-data.md).
 */
export function registerSpaceReadRoutes(app: FastifyInstance, options: SpaceReadRoutesOptions): void {
  const { host, auth } = options

  /** The caller, the space and the repo, refused unless it is the caller's own and the scope reads it. */
  async function ownRepo(request: Parameters<SpaceAuthVerifier['verify']>[0], nsid: string) {
    const caller = await auth.verify(request)
    const params = spaceParams(nsid, request.query)
    const space = String(params.space)
    authorizedSpace(caller, space, { action: 'read_self' })
    if (params.repo !== caller.did)
      throw new SpaceError('InsufficientScope', "an OAuth grant reads only the caller's own repo in a space")
    return { caller, params, space, did: caller.did }
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
      const { space, did } = await ownRepo(request, 'com.atproto.space.getLatestCommit')
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
      const { space, did, params } = await ownRepo(request, 'com.atproto.space.getRepo')
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
      const { space, did, params } = await ownRepo(request, 'com.atproto.space.listBlobs')
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
      const { space, did, params } = await ownRepo(request, 'com.atproto.space.getBlob')
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
