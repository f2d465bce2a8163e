import { createHash, createPublicKey, type JsonWebKey, verify } from 'node:crypto'
import { parseCompactJwt } from './compact-jwt.ts'
import { SpaceError } from './space-errors.ts'

/** How far a proof's `iat` may be from now (seconds). */
const MAX_PROOF_SKEW_S = 120

/** The RFC 7638 thumbprint (base64url SHA-256) of an EC or OKP public JWK. */
export function jwkThumbprint(jwk: JsonWebKey): string {
  const members =
    jwk.kty === 'EC'
      ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }
      : jwk.kty === 'OKP'
        ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x }
        : undefined
  if (!members) throw new SpaceError('AuthenticationRequired', `no thumbprint for a ${String(jwk.kty)} key`)
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url')
}

/**
 * Verifies a DPoP proof (RFC 9449) for a request presenting `accessToken` (a space credential):
 * `typ` dpop+jwt, an ES256 signature by the `jwk` in its header, that key's thumbprint `jkt`, `htm`
 * and `htu` the request's, `ath` the hash of the token, `iat` recent, and `jti` not seen before
 * (`firstUse(jti)` records it and says whether it is new). Throws `AuthenticationRequired`.
 */
export function verifyDpopProof(
  proof: string,
  expected: {
    htm: string
    htu: string
    accessToken: string
    jkt: string
    firstUse: (jti: string) => boolean
  },
  now: number = Date.now(),
): void {
  const jwt = parseCompactJwt(proof)
  if (jwt?.header.typ !== 'dpop+jwt') throw refused('the DPoP proof is not a dpop+jwt')
  if (jwt.header.alg !== 'ES256') throw refused('the DPoP proof must be ES256')
  const jwk = jwt.header.jwk as JsonWebKey | undefined
  if (jwk?.kty !== 'EC' || jwk.crv !== 'P-256' || 'd' in jwk)
    throw refused('the DPoP proof has no P-256 public jwk')
  const signed = verify(
    'sha256',
    jwt.signingInput,
    { key: createPublicKey({ key: jwk, format: 'jwk' }), dsaEncoding: 'ieee-p1363' },
    jwt.signature,
  )
  if (!signed) throw refused("the DPoP proof's signature does not verify with its jwk")
  if (jwkThumbprint(jwk) !== expected.jkt)
    throw refused('the DPoP key is not the one the credential is bound to')
  const { htm, htu, ath, iat, jti } = jwt.payload
  if (htm !== expected.htm || htu !== expected.htu)
    throw refused('the DPoP proof is for another request (htm, htu)')
  const hash = createHash('sha256').update(expected.accessToken).digest('base64url')
  if (ath !== hash) throw refused('the DPoP proof is for another credential (ath)')
  if (typeof iat !== 'number' || Math.abs(now / 1000 - iat) > MAX_PROOF_SKEW_S)
    throw refused('the DPoP proof is not recent (iat)')
  if (typeof jti !== 'string' || jti === '' || !expected.firstUse(jti))
    throw refused('the DPoP proof was used before (jti)')
}

function refused(message: string): SpaceError {
  return new SpaceError('AuthenticationRequired', message)
}
