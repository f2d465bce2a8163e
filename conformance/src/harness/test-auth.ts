import { randomBytes } from 'node:crypto'
import { TransferError } from '@pds-transfer/core'
import { type TransferAuthVerifier, type TransferCaller, UnauthenticatedError } from '@pds-transfer/source'
import type { FastifyRequest } from 'fastify'

/**
 * A stand-in authorization server for tests of the transfer endpoints that are
 * not about OAuth: opaque bearer tokens naming an account, a client and the
 * NSIDs allowed. The real verifier (DPoP tokens from @atproto/oauth-provider)
 * is tested on its own and in the reference-PDS suite.
 */
export class TestTokenAuth implements TransferAuthVerifier {
  private readonly tokens = new Map<string, TransferCaller & { nsids: string[] }>()

  issue(caller: TransferCaller, nsids: string[]): string {
    const token = randomBytes(16).toString('base64url')
    this.tokens.set(token, { ...caller, nsids })
    return token
  }

  async verify(request: FastifyRequest, nsid: string): Promise<TransferCaller> {
    const header = request.headers.authorization
    if (!header?.startsWith('Bearer ')) {
      throw new UnauthenticatedError('an access token is required', 'Bearer realm="transfer"')
    }
    const grant = this.tokens.get(header.slice(7))
    if (!grant) throw new UnauthenticatedError('unknown token', 'Bearer error="invalid_token"')
    if (!grant.nsids.includes(nsid)) {
      throw new TransferError('TransferNotAuthorized', `token lacks the rpc:${nsid} scope`)
    }
    return { did: grant.did, clientId: grant.clientId }
  }
}
