import { describe, expect, it } from 'vitest'
import { WireError } from '../src/errors.ts'
import {
  generateTransferKey,
  jwkPrivateKeyBytes,
  jwkPublicKeyBytes,
  parseTransferPublicJwk,
  publicJwk,
  sameKey,
} from '../src/jwk.ts'
import { setupRecipient, setupSender } from '../src/key-schedule.ts'

const DID = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz'
const TRANSFER_ID = '019537a1-7e28-7def-8c56-3a8b69e2d471'

function reason(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof WireError) return `${err.reason}: ${err.message}`
    throw err
  }
  return undefined
}

describe('transfer JWKs', () => {
  it('a generated key agrees with HPKE on both sides', async () => {
    const key = generateTransferKey({ alg: 'HPKE-3', exp: 2_000_000_000 })
    const pub = parseTransferPublicJwk(publicJwk(key), { now: 1_900_000_000 })
    expect(pub).toEqual(publicJwk(key))
    expect('d' in pub).toBe(false)
    const sender = await setupSender({
      algorithm: 'HPKE-3',
      recipientPublicKey: jwkPublicKeyBytes(pub),
      did: DID,
      transferId: TRANSFER_ID,
    })
    const recipient = await setupRecipient({
      algorithm: 'HPKE-3',
      recipientPrivateKey: jwkPrivateKeyBytes(key),
      enc: sender.enc,
      did: DID,
      transferId: TRANSFER_ID,
    })
    expect(Buffer.from(recipient.transferSecret)).toEqual(Buffer.from(sender.keys.transferSecret))
  })

  it('kids are unique by default', () => {
    expect(generateTransferKey({ alg: 'HPKE-4' }).kid).not.toBe(generateTransferKey({ alg: 'HPKE-4' }).kid)
  })

  it.each([
    ['not an object', 'nope', 'InvalidKey'],
    ['wrong kty', { kty: 'EC' }, 'kty'],
    ['wrong curve (Ed25519 signing key)', { crv: 'Ed25519' }, 'crv'],
    ['use sig', { use: 'sig' }, 'use'],
    ['missing kid', { kid: undefined }, 'kid'],
    ['unknown alg', { alg: 'HPKE-7' }, 'UnsupportedAlgorithm'],
    ['short x', { x: Buffer.alloc(31).toString('base64url') }, 'x must encode exactly 32'],
    ['padded x', { x: `${Buffer.alloc(32, 1).toString('base64url')}=` }, 'x must be base64url'],
    ['non-canonical x', { x: `${Buffer.alloc(32, 1).toString('base64url').slice(0, -1)}B` }, 'x must encode'],
    ['private part', { d: Buffer.alloc(32).toString('base64url') }, 'private part'],
    ['fractional exp', { exp: 1.5 }, 'exp'],
    ['expired', { exp: 1000 }, 'expired'],
  ])('rejects %s', (_name, patch, expected) => {
    const good = publicJwk(generateTransferKey({ alg: 'HPKE-3', exp: 2_000_000_000 }))
    const bad = typeof patch === 'object' ? { ...good, ...patch } : patch
    expect(reason(() => parseTransferPublicJwk(bad, { now: 1000 }))).toContain(expected)
  })

  it('accepts a key without exp (exp is SHOULD, not MUST)', () => {
    const { exp: _exp, ...key } = publicJwk(generateTransferKey({ alg: 'HPKE-3' }))
    expect(parseTransferPublicJwk(key, { now: 5 }).exp).toBeUndefined()
  })

  it('refuses a private JWK whose d does not belong to x', () => {
    const a = generateTransferKey({ alg: 'HPKE-3' })
    const b = generateTransferKey({ alg: 'HPKE-3' })
    expect(reason(() => jwkPrivateKeyBytes({ ...a, d: b.d }))).toContain('d does not match x')
  })

  it('sameKey compares kid, x, alg and exp', () => {
    const key = publicJwk(generateTransferKey({ alg: 'HPKE-3', exp: 10 }))
    expect(sameKey(key, { ...key })).toBe(true)
    expect(sameKey(key, { ...key, exp: 11 })).toBe(false)
    expect(sameKey(key, { ...key, alg: 'HPKE-4' })).toBe(false)
    expect(sameKey(key, { ...key, kid: 'other' })).toBe(false)
    expect(sameKey(key, { ...key, x: publicJwk(generateTransferKey({ alg: 'HPKE-3' })).x })).toBe(false)
  })
})
