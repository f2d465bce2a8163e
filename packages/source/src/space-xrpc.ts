import {
  parseSpaceRef,
  SpaceError,
  type SpaceNeed,
  type SpaceRef,
  spaceLexicons,
  spaceScopeAllows,
} from '@pds-transfer/core'
import type { FastifyReply } from 'fastify'
import type { SpaceCaller } from './space-auth.ts'

/** Sends any thrown value as an XRPC error body; unknown errors become a 500 without internals. */
export function sendSpaceError(reply: FastifyReply, err: unknown) {
  if (err instanceof SpaceError) return reply.code(err.status).type('application/json').send(err.toJSON())
  reply.log.error({ err }, 'space endpoint failed')
  return reply
    .code(500)
    .type('application/json')
    .send({ error: 'InternalServerError', message: 'internal error' })
}

/**
 * Query parameters checked against the method's lexicon, integers and booleans read from their
 * query-string text first (an XRPC query carries only strings).
 */
export function spaceParams(nsid: string, query: unknown): Record<string, unknown> {
  try {
    return (
      spaceLexicons.assertValidXrpcParams(nsid, typedParams(nsid, query as Record<string, unknown>)) ?? {}
    )
  } catch (err) {
    throw new SpaceError('InvalidRequest', (err as Error).message, { cause: err })
  }
}

/** A procedure's JSON body checked against the method's lexicon. */
export function spaceInput(nsid: string, body: unknown): Record<string, unknown> {
  try {
    return spaceLexicons.assertValidXrpcInput(nsid, body) as Record<string, unknown>
  } catch (err) {
    throw new SpaceError('InvalidRequest', (err as Error).message, { cause: err })
  }
}

/** The space the request names, refused unless the caller's grant covers `need` there. */
export function authorizedSpace(caller: SpaceCaller, space: unknown, need: SpaceNeed): SpaceRef {
  const ref = parseSpaceRef(String(space))
  if (!spaceScopeAllows(caller.scopes, caller.did, ref, need)) {
    const what = 'manage' in need ? `manage=${need.manage}` : `action=${need.action}`
    throw new SpaceError('InsufficientScope', `no space: scope grants ${what} in ${String(space)}`)
  }
  return ref
}

function typedParams(nsid: string, query: Record<string, unknown>): Record<string, unknown> {
  const def = spaceLexicons.getDefOrThrow(nsid) as {
    parameters?: { properties?: Record<string, { type: string }> }
  }
  const properties = def.parameters?.properties ?? {}
  const out: Record<string, unknown> = {}
  for (const [name, value] of Object.entries(query ?? {})) {
    const type = properties[name]?.type
    // A malformed number or boolean stays a string, which the lexicon then refuses by name.
    if (type === 'integer' && typeof value === 'string' && /^-?\d+$/.test(value)) out[name] = Number(value)
    else if (type === 'boolean' && (value === 'true' || value === 'false')) out[name] = value === 'true'
    else out[name] = value
  }
  return out
}
