import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { SpaceError } from '@pds-transfer/core'
import type { SpaceAuthVerifier, SpaceCaller } from '@pds-transfer/source'
import type { FastifyRequest } from 'fastify'

/**
 * A stand-in for OAuth on the test PDS's 0016 methods: bearer tokens naming an account and the
 * scopes granted (`space:` scopes among them), MACed with `secret`. The scope rules themselves are
 * the routes' (core `spaceScopeAllows`), not this class's.
 */
export class TestSpaceAuth implements SpaceAuthVerifier {
  constructor(private readonly secret: Buffer = randomBytes(32)) {}

  issue(caller: SpaceCaller): string {
    const payload = Buffer.from(JSON.stringify(caller)).toString('base64url')
    return `${payload}.${this.mac(payload).toString('base64url')}`
  }

  async verify(request: FastifyRequest): Promise<SpaceCaller> {
    const header = request.headers.authorization
    if (!header?.startsWith('Bearer '))
      throw new SpaceError('AuthenticationRequired', 'an access token is required')
    const [payload, tag, ...rest] = header.slice(7).split('.')
    const expected = payload ? this.mac(payload) : undefined
    const given = Buffer.from(tag ?? '', 'base64url')
    if (
      !payload ||
      !expected ||
      rest.length > 0 ||
      given.length !== expected.length ||
      !timingSafeEqual(given, expected)
    )
      throw new SpaceError('AuthenticationRequired', 'unknown token')
    const caller = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Partial<SpaceCaller>
    // A transfer token (`TestTokenAuth`) without space scopes grants none here.
    return { did: caller.did as string, scopes: caller.scopes ?? [] }
  }

  private mac(payload: string): Buffer {
    return createHmac('sha256', this.secret).update(payload).digest()
  }
}
