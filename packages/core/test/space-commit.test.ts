import { createHash } from 'node:crypto'
import { Secp256k1Keypair, verifySignature } from '@atproto/crypto'
import { describe, expect, it } from 'vitest'
import { checkSpaceCommit, encodeCommitContext, signSpaceCommit } from '../src/space-commit.ts'
import { SET_HASH_STATE_BYTES, SpaceSetHash, setHashElement } from '../src/space-set-hash.ts'

const SPACE = 'at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/space/com.example.forum/default'
const AUTHOR = 'did:plc:bbbbbbbbbbbbbbbbbbbbbbbb'
const REV = '3lbgkz6qo5c2a'
const CID = 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm'

describe('the set hash (0016 "Commit digest")', () => {
  it('is 2048 zero bytes when empty, and its digest is sha256 of that state', () => {
    const empty = new SpaceSetHash()
    expect(empty.state()).toEqual(new Uint8Array(SET_HASH_STATE_BYTES))
    expect(Buffer.from(empty.digest())).toEqual(createHash('sha256').update(Buffer.alloc(2048)).digest())
  })

  it('expands an element with BLAKE3 and reads it as little-endian lanes (BLAKE3("") test vector)', () => {
    // The first 32 bytes of BLAKE3's XOF output are its default 256-bit hash; BLAKE3 of the
    // empty input is the reference implementation's published vector.
    const state = new SpaceSetHash().add('').state()
    expect(Buffer.from(state.subarray(0, 32)).toString('hex')).toBe(
      'af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262',
    )
    // Adding twice doubles each little-endian lane modulo 2^16.
    const twice = new SpaceSetHash().add('').add('').state()
    const lane = (b: Uint8Array, i: number) => new DataView(b.buffer, b.byteOffset).getUint16(i * 2, true)
    for (const i of [0, 1, 511, 1023]) expect(lane(twice, i)).toBe((2 * lane(state, i)) % 65536)
  })

  it('depends on the set, not the order of writes; remove undoes add; resumes from its state', () => {
    const a = new SpaceSetHash().add('x/1/c').add('y/2/d').add('z/3/e')
    const b = new SpaceSetHash().add('z/3/e').add('x/1/c').add('q/9/f').add('y/2/d').remove('q/9/f')
    expect(a.digest()).toEqual(b.digest())
    expect(new SpaceSetHash(a.state()).digest()).toEqual(a.digest())
    expect(new SpaceSetHash().add('x/1/c').digest()).not.toEqual(a.digest())
    expect(() => new SpaceSetHash(new Uint8Array(32))).toThrow(/2048/)
  })

  it('an element is {collection}/{rkey}/{cid}', () => {
    expect(setHashElement('com.example.post', '3k2a', CID)).toBe(`com.example.post/3k2a/${CID}`)
  })
})

describe('the commit signature (0016 "Commit signature")', () => {
  it('ctx is the tag, then space, author, rev and ikm each with a big-endian uint16 length', () => {
    const ikm = new Uint8Array(32).fill(7)
    const ctx = encodeCommitContext({ space: 'S', author: 'AU', rev: 'REV' }, ikm)
    const expected = Buffer.concat([
      Buffer.from('atproto-space-v1'),
      Buffer.from([0, 1]),
      Buffer.from('S'),
      Buffer.from([0, 2]),
      Buffer.from('AU'),
      Buffer.from([0, 3]),
      Buffer.from('REV'),
      Buffer.from([0, 32]),
      ikm,
    ])
    expect(Buffer.from(ctx)).toEqual(expected)
  })

  it('verifies; the signature covers ctx only and the MAC binds the hash', async () => {
    const key = await Secp256k1Keypair.create()
    const hash = new SpaceSetHash().add(setHashElement('com.example.post', '3k2a', CID)).digest()
    const context = { space: SPACE, author: AUTHOR, rev: REV }
    const commit = await signSpaceCommit(context, hash, key)
    expect(commit.ikm).toHaveLength(32)
    expect(await checkSpaceCommit(commit, context, key.did())).toBeUndefined()
    // A fresh ikm per commit: two commits of one state differ.
    const again = await signSpaceCommit(context, hash, key)
    expect(Buffer.from(again.ikm)).not.toEqual(Buffer.from(commit.ikm))
    // The signature is over ctx without the hash (deniability): it still verifies for ctx.
    expect(await verifySignature(key.did(), encodeCommitContext(context, commit.ikm), commit.sig)).toBe(true)
  })

  it.each([
    ['another hash', (c: Commit) => ({ ...c, hash: new Uint8Array(32).fill(1) }), /MAC/],
    ['another MAC', (c: Commit) => ({ ...c, mac: flip(c.mac) }), /MAC/],
    ['another ikm', (c: Commit) => ({ ...c, ikm: flip(c.ikm) }), /MAC/],
    ['another signature', (c: Commit) => ({ ...c, sig: flip(c.sig) }), /signature/],
    ['a short ikm', (c: Commit) => ({ ...c, ikm: c.ikm.subarray(1) }), /ikm/],
    ['version 2', (c: Commit) => ({ ...c, ver: 2 }), /version/],
  ])('refuses a commit with %s', async (_what, tamper, why) => {
    const key = await Secp256k1Keypair.create()
    const context = { space: SPACE, author: AUTHOR, rev: REV }
    const commit = await signSpaceCommit(context, new SpaceSetHash().digest(), key)
    expect(await checkSpaceCommit(tamper(commit), context, key.did())).toMatch(why)
  })

  it('refuses a commit checked for another space, author, rev or key', async () => {
    const key = await Secp256k1Keypair.create()
    const context = { space: SPACE, author: AUTHOR, rev: REV }
    const commit = await signSpaceCommit(context, new SpaceSetHash().digest(), key)
    expect(await checkSpaceCommit(commit, { ...context, space: `${SPACE}2` }, key.did())).toMatch(/MAC/)
    expect(await checkSpaceCommit(commit, { ...context, author: 'did:plc:c' }, key.did())).toMatch(/MAC/)
    expect(await checkSpaceCommit(commit, { ...context, rev: '3lbgkz6qo5c2b' }, key.did())).toMatch(/rev/)
    const other = await Secp256k1Keypair.create()
    expect(await checkSpaceCommit(commit, context, other.did())).toMatch(/signature/)
  })
})

type Commit = Awaited<ReturnType<typeof signSpaceCommit>>

function flip(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes)
  out[0] = (out[0] as number) ^ 1
  return out
}
