import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { TransferError } from '@pds-transfer/core'
import { type TransferAuthVerifier, type TransferCaller, UnauthenticatedError } from '@pds-transfer/source'
import type { FastifyRequest } from 'fastify'
import { TestSpaceAuth } from './test-space-auth.ts'

type Grant = TransferCaller & { nsids: string[]; scopes?: string[] }

/**
 * A stand-in authorization server for tests of the transfer endpoints that are
 * not about OAuth: bearer tokens naming an account, a client and the NSIDs allowed,
 * MACed with `secret`. Stateless, so a source process killed and started again with
 * the same secret still accepts the tokens it issued (as a real PDS's sessions survive
 * a restart). The real verifier (DPoP tokens from @atproto/oauth-provider) is tested
 * on its own and in the reference-PDS suite.
 */
export class TestTokenAuth implements TransferAuthVerifier {
  constructor(private readonly secret: Buffer = randomBytes(32)) {}

  /**
   * A token for `caller` granting `nsids`, and the `space:` scopes `spaceScopes` (read by
   * `spaceAuth()`: one grant carries both, as one OAuth token would).
   */
  issue(caller: TransferCaller, nsids: string[], spaceScopes?: string[]): string {
    const grant: Grant = {
      did: caller.did,
      clientId: caller.clientId,
      nsids,
      ...(spaceScopes && { scopes: spaceScopes }),
    }
    const payload = Buffer.from(JSON.stringify(grant)).toString('base64url')
    return `${payload}.${this.mac(payload).toString('base64url')}`
  }

  async verify(request: FastifyRequest, nsid: string): Promise<TransferCaller> {
    const header = request.headers.authorization
    if (!header?.startsWith('Bearer ')) {
      throw new UnauthenticatedError('an access token is required', 'Bearer realm="transfer"')
    }
    const grant = this.read(header.slice(7))
    if (!grant) throw new UnauthenticatedError('unknown token', 'Bearer error="invalid_token"')
    if (!grant.nsids.includes(nsid)) {
      throw new TransferError('TransferNotAuthorized', `token lacks the rpc:${nsid} scope`)
    }
    return { did: grant.did, clientId: grant.clientId }
  }

  /** The verifier of the 0016 methods for the same tokens (their `space:` scopes; none unless issued with them). */
  spaceAuth(): TestSpaceAuth {
    return new TestSpaceAuth(this.secret)
  }

  private read(token: string): Grant | undefined {
    const [payload, tag, ...rest] = token.split('.')
    if (!payload || !tag || rest.length > 0) return undefined
    const expected = this.mac(payload)
    const given = Buffer.from(tag, 'base64url')
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined
    return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Grant
  }

  private mac(payload: string): Buffer {
    return createHmac('sha256', this.secret).update(payload).digest()
  }
}
