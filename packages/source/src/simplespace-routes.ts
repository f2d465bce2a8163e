import { TID } from '@atproto/common-web'
import { formatSpaceRef, SpaceError, type SpaceRef } from '@pds-transfer/core'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import {
  SIMPLESPACE_DEFS,
  type SimpleSpace,
  type SimpleSpaceHost,
  type SpaceAppAccess,
  type SpacePolicy,
} from './simplespace-host.ts'
import type { SpaceAuthVerifier, SpaceCaller } from './space-auth.ts'
import { authorizedSpace, sendSpaceError, spaceInput, spaceParams } from './space-xrpc.ts'

/** Options of {@link registerSimpleSpaceRoutes}. */
export interface SimpleSpaceRoutesOptions {
  host: SimpleSpaceHost
  auth: SpaceAuthVerifier
}

/** The policy variants this host enforces; `managingAppPolicy` needs checkUserAccess calls, not served yet. */
const POLICIES = [`${SIMPLESPACE_DEFS}#publicPolicy`, `${SIMPLESPACE_DEFS}#memberListPolicy`]
const APP_ACCESS = [`${SIMPLESPACE_DEFS}#open`, `${SIMPLESPACE_DEFS}#allowList`]

/**
 * `com.atproto.simplespace.*` management (0016, "Required PDS space management"): createSpace
 * (`manage=create`), updateSpace, addMember, removeMember (`manage=update`), each by the owner
 * (the space authority) only; getSpace and listMembers with a `read_self` grant, for the owner or
 * a user the space's policy authorizes. deleteSpace is not served yet.
 */
export function registerSimpleSpaceRoutes(app: FastifyInstance, options: SimpleSpaceRoutesOptions): void {
  const { host, auth } = options

  const procedure = (
    name: string,
    handle: (caller: SpaceCaller, input: Record<string, unknown>) => Promise<unknown>,
  ) =>
    app.post(
      `/xrpc/com.atproto.simplespace.${name}`,
      async (request: FastifyRequest, reply: FastifyReply) => {
        try {
          const caller = await auth.verify(request)
          const output = await handle(caller, spaceInput(`com.atproto.simplespace.${name}`, request.body))
          return output === undefined ? reply.code(200).send() : reply.send(output)
        } catch (err) {
          return sendSpaceError(reply, err)
        }
      },
    )

  procedure('createSpace', async (caller, input) => {
    const space: SpaceRef = {
      authority: caller.did,
      type: String(input.type),
      skey: input.skey === undefined ? TID.nextStr() : String(input.skey),
    }
    const uri = formatSpaceRef(space)
    authorizedSpace(caller, uri, { manage: 'create' })
    const policy = checkPolicy(input.policy)
    const appAccess = checkAppAccess(input.appAccess)
    if (!(await host.createSpace({ uri, policy, appAccess })))
      throw new SpaceError('SpaceAlreadyExists', `${uri} already exists`)
    return { uri }
  })

  procedure('updateSpace', async (caller, input) => {
    const uri = await ownedSpace(caller, input.space, 'update')
    const patch = {
      ...(input.policy !== undefined && { policy: checkPolicy(input.policy) }),
      ...(input.appAccess !== undefined && { appAccess: checkAppAccess(input.appAccess) }),
    }
    if (!(await host.updateSpace(uri, patch))) throw notFound(uri)
    return undefined
  })

  procedure('addMember', async (caller, input) => {
    const uri = await ownedSpace(caller, input.space, 'update')
    if (!(await host.addMember(uri, String(input.did)))) throw notFound(uri)
    return undefined
  })

  procedure('removeMember', async (caller, input) => {
    const uri = await ownedSpace(caller, input.space, 'update')
    if (!(await host.removeMember(uri, String(input.did)))) throw notFound(uri)
    return undefined
  })

  app.get('/xrpc/com.atproto.simplespace.getSpace', async (request, reply) => {
    try {
      const caller = await auth.verify(request)
      const params = spaceParams('com.atproto.simplespace.getSpace', request.query)
      const space = await readableSpace(caller, params.space)
      return reply.send(space)
    } catch (err) {
      return sendSpaceError(reply, err)
    }
  })

  app.get('/xrpc/com.atproto.simplespace.listMembers', async (request, reply) => {
    try {
      const caller = await auth.verify(request)
      const params = spaceParams('com.atproto.simplespace.listMembers', request.query)
      const space = await readableSpace(caller, params.space)
      const page = await host.listMembers(space.uri, {
        limit: params.limit as number,
        ...(params.cursor !== undefined && { cursor: String(params.cursor) }),
      })
      if (!page) throw notFound(space.uri)
      return reply.send({
        members: page.members.map((did) => ({ did })),
        ...(page.cursor && { cursor: page.cursor }),
      })
    } catch (err) {
      return sendSpaceError(reply, err)
    }
  })

  /** A space that exists here and whose owner is the caller, with the `manage` grant for `op`. */
  async function ownedSpace(caller: SpaceCaller, value: unknown, op: 'update' | 'delete'): Promise<string> {
    const ref = authorizedSpace(caller, value, { manage: op })
    const uri = formatSpaceRef(ref)
    if (!(await host.getSpace(uri))) throw notFound(uri)
    if (ref.authority !== caller.did)
      throw new SpaceError('NotSpaceOwner', `${caller.did} does not own ${uri}`)
    return uri
  }

  /** A space the caller may describe: the owner, or a user its policy authorizes; else SpaceNotFound. */
  async function readableSpace(caller: SpaceCaller, value: unknown): Promise<SimpleSpace> {
    const ref = authorizedSpace(caller, value, { action: 'read_self' })
    const uri = formatSpaceRef(ref)
    const space = await host.getSpace(uri)
    // Not authorized reads as not found, so the answer does not reveal that the space exists.
    if (!space || !(await authorized(caller.did, ref, space))) throw notFound(uri)
    return space
  }

  async function authorized(did: string, ref: SpaceRef, space: SimpleSpace): Promise<boolean> {
    if (ref.authority === did) return true
    if (space.policy.$type === `${SIMPLESPACE_DEFS}#publicPolicy`) return true
    if (space.policy.$type === `${SIMPLESPACE_DEFS}#memberListPolicy`) return host.isMember(space.uri, did)
    return false
  }
}

function checkPolicy(value: unknown): SpacePolicy {
  const type = (value as { $type?: string }).$type
  if (!type || !POLICIES.includes(type))
    throw new SpaceError('UnsupportedPolicy', `policy ${type} is not implemented here`)
  return { $type: type } as SpacePolicy
}

function checkAppAccess(value: unknown): SpaceAppAccess {
  const v = value as { $type?: string; allowed?: string[] }
  if (!v.$type || !APP_ACCESS.includes(v.$type))
    throw new SpaceError('UnsupportedAppAccess', `appAccess ${v.$type} is not implemented here`)
  return v.$type === `${SIMPLESPACE_DEFS}#allowList`
    ? { $type: `${SIMPLESPACE_DEFS}#allowList`, allowed: [...(v.allowed ?? [])] }
    : { $type: `${SIMPLESPACE_DEFS}#open` }
}

function notFound(uri: string): SpaceError {
  return new SpaceError('SpaceNotFound', `no space ${uri} here`)
}
