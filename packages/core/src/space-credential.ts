import { randomBytes } from 'node:crypto'
import { parseDidKey, verifySignature } from '@atproto/crypto'
import { parseCompactJwt, signCompactJwt } from './compact-jwt.ts'
import { SpaceError } from './space-errors.ts'
import { parseSpaceRef } from './space-ref.ts'

/** The JWT `typ` of a space credential (0016, "Space credential"). */
export const SPACE_CREDENTIAL_TYP = 'atproto-space-credential+jwt'

/** What a verified space credential grants: whole-space read of `space`, bound to the DPoP key `jkt`. */
export interface SpaceCredential {
  /** The space authority (`iss`). */
  authority: string
  /** The space-ref (`sub`). */
  space: string
  /** JWK thumbprint of the key every request must prove (`cnf.jkt`). */
  jkt: string
  exp: number
}

/** Signs as the space authority: an `@atproto/crypto` keypair fits. */
export interface CredentialSigner {
  jwtAlg: string
  sign(message: Uint8Array): Promise<Uint8Array>
}

/**
 * A credential for `space`, bound to `jkt`, signed by its authority: what `getSpaceCredential`
 * answers once the authority decided to issue one (2 hours by default, as 0016 says).
 */
export async function mintSpaceCredential(params: {
  space: string
  jkt: string
  signer: CredentialSigner
  /** `#atproto_space` when the authority publishes a dedicated key, else `#atproto`. */
  kid?: string
  ttlSeconds?: number
  now?: number
}): Promise<string> {
  const iat = Math.floor((params.now ?? Date.now()) / 1000)
  return signCompactJwt(
    { typ: SPACE_CREDENTIAL_TYP, alg: params.signer.jwtAlg, kid: params.kid ?? '#atproto' },
    {
      iss: parseSpaceRef(params.space).authority,
      sub: params.space,
      cnf: { jkt: params.jkt },
      iat,
      exp: iat + (params.ttlSeconds ?? 7200),
      jti: randomBytes(16).toString('hex'),
    },
    (input) => params.signer.sign(input),
  )
}

/**
 * Verifies a space credential: its `typ`, its `sub` a space whose authority is `iss`, not expired,
 * a `cnf.jkt`, and its signature by the authority's key (`resolveKey(iss)`: the DID document's
 * `#atproto_space`, else `#atproto`). Returns `undefined` for a token that is not a space credential
 * at all (an OAuth access token, say); throws `AuthenticationRequired` for one that fails.
 */
export async function verifySpaceCredential(
  token: string,
  resolveKey: (authority: string) => Promise<string>,
  now: number = Date.now(),
): Promise<SpaceCredential | undefined> {
  const jwt = parseCompactJwt(token)
  if (!jwt || jwt.header.typ !== SPACE_CREDENTIAL_TYP) return undefined
  const { iss, sub, cnf, exp } = jwt.payload
  const jkt = (cnf as { jkt?: unknown } | undefined)?.jkt
  if (
    typeof iss !== 'string' ||
    typeof sub !== 'string' ||
    typeof jkt !== 'string' ||
    typeof exp !== 'number'
  )
    throw refused('the space credential lacks iss, sub, cnf.jkt or exp')
  let authority: string
  try {
    authority = parseSpaceRef(sub).authority
  } catch {
    throw refused('the space credential does not name a space (sub)')
  }
  if (authority !== iss) throw refused("the space credential's issuer is not the space's authority")
  if (exp * 1000 <= now) throw refused('the space credential has expired')
  const didKey = await resolveKey(iss)
  if (jwt.header.alg !== parseDidKey(didKey).jwtAlg)
    throw refused("the space credential's alg is not its authority key's")
  // JWTs from other libraries may carry high-S ECDSA signatures; the key is what matters here.
  const signed = await verifySignature(didKey, jwt.signingInput, jwt.signature, {
    allowMalleableSig: true,
  }).catch(() => false)
  if (!signed) throw refused("the space credential's signature does not verify with its authority's key")
  return { authority, space: sub, jkt, exp }
}

function refused(message: string): SpaceError {
  return new SpaceError('AuthenticationRequired', message)
}
