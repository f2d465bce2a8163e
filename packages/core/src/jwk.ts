import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto'
import { isTransferAlgorithm, type TransferAlgorithm } from './algorithms.ts'
import { WireError } from './errors.ts'

/** An HPKE recipient public key as published in the well-known document and sent in exportAccount. */
export interface TransferPublicJwk {
  kty: 'OKP'
  crv: 'X25519'
  /** base64url of the 32-byte X25519 public key. */
  x: string
  kid: string
  alg: TransferAlgorithm
  use: 'enc'
  /** Unix seconds after which the key must no longer be used. */
  exp?: number
}

/** The same key with its private part; never leaves the destination. */
export interface TransferPrivateJwk extends TransferPublicJwk {
  /** base64url of the 32-byte X25519 private key. */
  d: string
}

const X25519_KEY_LENGTH = 32
const MAX_KID_LENGTH = 128

/** Creates a fresh X25519 key for one suite. The default kid is unique and sorts by creation time. */
export function generateTransferKey(options: {
  alg: TransferAlgorithm
  kid?: string
  exp?: number
}): TransferPrivateJwk {
  const { privateKey } = generateKeyPairSync('x25519')
  const jwk = privateKey.export({ format: 'jwk' })
  if (!jwk.x || !jwk.d) throw new Error('node:crypto returned an X25519 JWK without x or d')
  const kid = options.kid ?? `${Date.now().toString(36)}-${randomBytes(6).toString('base64url')}`
  const key: TransferPrivateJwk = {
    kty: 'OKP',
    crv: 'X25519',
    x: jwk.x,
    d: jwk.d,
    kid,
    alg: options.alg,
    use: 'enc',
  }
  if (options.exp !== undefined) key.exp = options.exp
  return key
}

/** The public half of a key, with only the fields the protocol defines (never `d`). */
export function publicJwk(key: TransferPublicJwk): TransferPublicJwk {
  const out: TransferPublicJwk = {
    kty: 'OKP',
    crv: 'X25519',
    x: key.x,
    kid: key.kid,
    alg: key.alg,
    use: 'enc',
  }
  if (key.exp !== undefined) out.exp = key.exp
  return out
}

/**
 * Checks a JWK received from a peer (exportAccount's `encryptionKey`, a well-known key).
 * Throws `InvalidKey` naming the offending field, or `UnsupportedAlgorithm`. A key carrying
 * a private part is refused: accepting it would bless a leaked key.
 */
export function parseTransferPublicJwk(value: unknown, options: { now?: number } = {}): TransferPublicJwk {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new WireError('InvalidKey', 'key must be a JSON object (JWK)')
  }
  const jwk = value as Record<string, unknown>
  if (jwk.kty !== 'OKP')
    throw new WireError('InvalidKey', `kty must be "OKP", got ${JSON.stringify(jwk.kty)}`)
  if (jwk.crv !== 'X25519')
    throw new WireError('InvalidKey', `crv must be "X25519", got ${JSON.stringify(jwk.crv)}`)
  if (jwk.use !== 'enc')
    throw new WireError('InvalidKey', `use must be "enc", got ${JSON.stringify(jwk.use)}`)
  if (typeof jwk.kid !== 'string' || jwk.kid.length === 0 || jwk.kid.length > MAX_KID_LENGTH) {
    throw new WireError('InvalidKey', `kid must be a string of 1 to ${MAX_KID_LENGTH} characters`)
  }
  if (!isTransferAlgorithm(jwk.alg)) {
    throw new WireError('UnsupportedAlgorithm', `alg ${JSON.stringify(jwk.alg)} is not HPKE-3 or HPKE-4`)
  }
  if (jwk.d !== undefined) throw new WireError('InvalidKey', 'a public key must not carry the private part d')
  const x = decodeKeyBytes(jwk.x, 'x')
  const key: TransferPublicJwk = {
    kty: 'OKP',
    crv: 'X25519',
    x: Buffer.from(x).toString('base64url'),
    kid: jwk.kid,
    alg: jwk.alg,
    use: 'enc',
  }
  if (jwk.exp !== undefined) {
    if (typeof jwk.exp !== 'number' || !Number.isSafeInteger(jwk.exp) || jwk.exp < 0) {
      throw new WireError('InvalidKey', 'exp must be a non-negative integer (Unix seconds)')
    }
    if (options.now !== undefined && jwk.exp <= options.now) {
      throw new WireError('InvalidKey', `key ${jwk.kid} expired at ${jwk.exp} (now ${options.now})`)
    }
    key.exp = jwk.exp
  }
  return key
}

/** Raw 32-byte X25519 public key of a JWK. */
export function jwkPublicKeyBytes(key: TransferPublicJwk): Uint8Array {
  return decodeKeyBytes(key.x, 'x')
}

/** Raw 32-byte X25519 private key of a JWK; checks that `d` belongs to `x`. */
export function jwkPrivateKeyBytes(key: TransferPrivateJwk): Uint8Array {
  const d = decodeKeyBytes(key.d, 'd')
  const derived = createPublicKey(
    createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', x: key.x, d: key.d }, format: 'jwk' }),
  )
  if (derived.export({ format: 'jwk' }).x !== key.x)
    throw new WireError('InvalidKey', `d does not match x in key ${key.kid}`)
  return d
}

/** True when both JWKs denote the same published key: kid, x, alg and exp all equal. */
export function sameKey(a: TransferPublicJwk, b: TransferPublicJwk): boolean {
  return a.kid === b.kid && a.x === b.x && a.alg === b.alg && a.exp === b.exp
}

function decodeKeyBytes(value: unknown, field: 'x' | 'd'): Uint8Array {
  if (typeof value !== 'string' || !/^[A-Za-z0-9_-]+$/.test(value)) {
    throw new WireError('InvalidKey', `${field} must be base64url without padding`)
  }
  const bytes = Buffer.from(value, 'base64url')
  // Non-canonical encodings (stray trailing bits) would let two strings name one key.
  if (bytes.length !== X25519_KEY_LENGTH || bytes.toString('base64url') !== value) {
    throw new WireError('InvalidKey', `${field} must encode exactly ${X25519_KEY_LENGTH} bytes (X25519)`)
  }
  return new Uint8Array(bytes)
}
