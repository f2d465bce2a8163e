import { describe, expect, it } from 'vitest'
import { WireError } from '../src/errors.ts'
import { generateTransferKey, publicJwk } from '../src/jwk.ts'
import { buildWellKnown, findPublishedKey, parseWellKnown, selectAlgorithm } from '../src/well-known.ts'

const NOW = 1_800_000_000

describe('well-known document', () => {
  const current = publicJwk(generateTransferKey({ alg: 'HPKE-3', exp: NOW + 86400 }))
  const old = publicJwk(generateTransferKey({ alg: 'HPKE-3', exp: NOW - 1 }))
  const chacha = publicJwk(generateTransferKey({ alg: 'HPKE-4' }))

  it('round-trips and leaves expired keys out', () => {
    const doc = buildWellKnown({
      did: 'did:web:dest.example',
      algorithms: ['HPKE-3', 'HPKE-4'],
      keys: [current, old, chacha],
      extensions: ['end-manifest'],
      now: NOW,
    })
    expect(doc.keys.keys.map((k) => k.kid)).toEqual([current.kid, chacha.kid])
    const parsed = parseWellKnown(JSON.parse(JSON.stringify(doc)), { now: NOW })
    expect(parsed.document).toEqual(doc)
    expect(parsed.droppedKeys).toEqual([])
  })

  it('never publishes a private part', () => {
    const priv = generateTransferKey({ alg: 'HPKE-3' })
    const doc = buildWellKnown({ did: 'did:web:a.example', algorithms: ['HPKE-3'], keys: [priv] })
    expect(JSON.stringify(doc)).not.toContain(priv.d)
  })

  it('accepts the proposal example shape and drops unusable keys with a reason', () => {
    const { document, droppedKeys } = parseWellKnown(
      {
        version: 1,
        did: 'did:web:pds.example.com',
        algorithms: ['HPKE-9-PQ', 'HPKE-3'],
        keys: { keys: [current, old, { ...chacha, alg: 'HPKE-9-PQ', kid: 'pq' }] },
      },
      { now: NOW },
    )
    expect(document.keys.keys).toEqual([current])
    expect(droppedKeys.map((d) => d.kid)).toEqual([old.kid, 'pq'])
    expect(droppedKeys[0]?.reason).toContain('expired')
  })

  it.each([
    ['not an object', []],
    ['version 2', { version: 2 }],
    ['did not a DID', { did: 'pds.example.com' }],
    ['no algorithms', { algorithms: [] }],
    ['keys not a JWK Set', { keys: [current] }],
    ['duplicate kid', { keys: { keys: [current, current] } }],
    ['extensions not strings', { extensions: [1] }],
  ])('rejects %s', (_name, patch) => {
    const base = { version: 1, did: 'did:web:x.example', algorithms: ['HPKE-3'], keys: { keys: [current] } }
    const value = Array.isArray(patch) ? patch : { ...base, ...patch }
    expect(() => parseWellKnown(value, { now: NOW })).toThrow(WireError)
    try {
      parseWellKnown(value, { now: NOW })
    } catch (err) {
      expect((err as WireError).reason).toBe('InvalidWellKnown')
    }
  })

  it('finds a published key only when every field matches', () => {
    const doc = buildWellKnown({ did: 'did:web:d.example', algorithms: ['HPKE-3'], keys: [current] })
    expect(findPublishedKey(doc, current)).toEqual(current)
    expect(findPublishedKey(doc, { ...current, exp: current.exp! + 1 })).toBeUndefined()
    expect(findPublishedKey(doc, { ...current, x: chacha.x })).toBeUndefined()
  })

  it('selects the receiver-preferred suite both sides speak', () => {
    expect(selectAlgorithm(['HPKE-4', 'HPKE-3'], ['HPKE-3', 'HPKE-4'])).toBe('HPKE-4')
    expect(selectAlgorithm(['HPKE-9-PQ', 'HPKE-3'], ['HPKE-9-PQ', 'HPKE-3'])).toBe('HPKE-3')
    expect(selectAlgorithm(['HPKE-4'], ['HPKE-3'])).toBeUndefined()
  })
})
