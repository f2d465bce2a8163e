import type { FastifyReply, FastifyRequest } from 'fastify'

/** Who is calling: the account (OAuth `sub`) and the OAuth client acting for it (the destination). */
export interface TransferCaller {
  did: string
  clientId: string
}

/**
 * Authenticates a request to one of the transfer endpoints for `nsid`.
 * Throws `TransferError('TransferNotAuthorized', ..., { status: 401 })` with a
 * `wwwAuthenticate` value for a missing or invalid token, and
 * `TransferNotAuthorized` (403) for a token without the needed scope.
 */
export interface TransferAuthVerifier {
  /** `reply` lets a verifier add headers to whatever answer follows (e.g. `DPoP-Nonce`). */
  verify(request: FastifyRequest, nsid: string, reply?: FastifyReply): Promise<TransferCaller>
}
