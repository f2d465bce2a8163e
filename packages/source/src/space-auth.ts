import type { FastifyRequest } from 'fastify'

/** Who calls a 0016 method with an OAuth credential, and the scopes the grant carries. */
export interface SpaceCaller {
  did: string
  /** The granted scopes (e.g. `space:*?authority=*&action=read_self`). */
  scopes: string[]
}

/**
 * Authenticates a request to a `com.atproto.space.*` or `com.atproto.simplespace.*` method.
 * Throws `SpaceError('AuthenticationRequired')` for a missing or invalid credential; the routes
 * check the `space:` scope against the target space themselves.
 */
export interface SpaceAuthVerifier {
  verify(request: FastifyRequest): Promise<SpaceCaller>
}
