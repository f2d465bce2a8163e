import { OAuthError, WWWAuthenticateError } from '@atproto/oauth-provider/errors'
import type { OAuthVerifier } from '@atproto/oauth-provider/verifier'
import { ScopePermissions } from '@atproto/oauth-scopes'
import { TransferError } from '@pds-transfer/core'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { TransferAuthVerifier, TransferCaller } from './transfer-auth.ts'
import { UnauthenticatedError } from './xrpc-reply.ts'

export interface OAuthTransferAuthOptions {
  /**
   * The PDS's OAuth resource-server verifier: its `OAuthProvider` (which is one) or a
   * standalone `OAuthVerifier` sharing the provider's issuer and keys.
   */
  verifier: Pick<OAuthVerifier, 'authenticateRequest' | 'nextDpopNonce'>
  /** Public base URL of this PDS: the DPoP proof signs the full request URL (`htu`). */
  publicUrl: string
  /** This PDS's service DID: the tokens' audience, and `aud` of the rpc scopes (`<did>#atproto_pds`). */
  serviceDid: string
}

/**
 * Authorizes the transfer endpoints as an OAuth resource server of `@atproto/oauth-provider`:
 * a DPoP-bound access token whose audience is this PDS, holding `atproto` and
 * `rpc:<nsid>?aud=<service DID>#atproto_pds` for the endpoint called (decision 5; bare
 * `rpc:<nsid>` does not parse in the permission spec). The caller is the token's `sub` (the
 * account) and `client_id` (the destination PDS).
 *
 * A missing, invalid or expired token, a bad DPoP proof or a needed DPoP nonce is 401 with the
 * provider's `WWW-Authenticate` challenge (erratum E3); a valid token without the scope is 403.
 */
export class OAuthTransferAuth implements TransferAuthVerifier {
  private readonly aud: string

  constructor(private readonly options: OAuthTransferAuthOptions) {
    this.aud = `${options.serviceDid}#atproto_pds`
  }

  async verify(request: FastifyRequest, nsid: string, reply?: FastifyReply): Promise<TransferCaller> {
    // RFC 9449 §8.2: every response may carry the next nonce, so clients never need a retry.
    const nonce = this.options.verifier.nextDpopNonce()
    if (nonce && reply)
      reply.header('DPoP-Nonce', nonce).header('Access-Control-Expose-Headers', 'DPoP-Nonce')
    const url = new URL(request.url, this.options.publicUrl)
    let payload: Awaited<ReturnType<OAuthVerifier['authenticateRequest']>>
    try {
      payload = await this.options.verifier.authenticateRequest(request.method, url, request.headers, {
        audience: [this.options.serviceDid],
        scope: ['atproto'],
      })
    } catch (err) {
      if (err instanceof WWWAuthenticateError) {
        throw new UnauthenticatedError(err.error_description, err.wwwAuthenticateHeader, { cause: err })
      }
      if (err instanceof OAuthError) {
        throw new UnauthenticatedError(err.error_description, `DPoP error="${err.error}"`, { cause: err })
      }
      throw err
    }
    const { sub, client_id: clientId, scope } = payload
    if (typeof sub !== 'string' || !sub.startsWith('did:') || typeof clientId !== 'string') {
      throw new UnauthenticatedError('the token names no account or client', 'DPoP error="invalid_token"')
    }
    if (!new ScopePermissions(scope?.split(' ')).allowsRpc({ aud: this.aud, lxm: nsid })) {
      throw new TransferError('TransferNotAuthorized', `the token lacks rpc:${nsid}?aud=${this.aud}`)
    }
    return { did: sub, clientId }
  }
}
