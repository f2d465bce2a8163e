import { createHmac, hkdfSync } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { hkdfExpandSha256 } from '../src/hkdf-expand.ts'

const hex = (s: string) => Uint8Array.from(Buffer.from(s, 'hex'))
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex')
const extract = (salt: Uint8Array, ikm: Uint8Array) => createHmac('sha256', salt).update(ikm).digest()

// RFC 5869 Appendix A, SHA-256 cases: PRK is given, so Expand is checked on its own.
const RFC5869 = [
  {
    name: 'A.1',
    prk: '077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5',
    info: 'f0f1f2f3f4f5f6f7f8f9',
    length: 42,
    okm: '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865',
  },
  {
    name: 'A.3 (empty info)',
    prk: '19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04',
    info: '',
    length: 42,
    okm: '8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8',
  },
]

describe('hkdfExpandSha256', () => {
  for (const v of RFC5869) {
    it(`matches RFC 5869 ${v.name}`, () => {
      expect(toHex(hkdfExpandSha256(hex(v.prk), hex(v.info), v.length))).toBe(v.okm)
    })
  }

  it('equals node:crypto extract-then-expand when given the extracted PRK', () => {
    const salt = hex('000102030405060708090a0b0c')
    const ikm = new Uint8Array(22).fill(0x0b)
    for (const length of [1, 12, 16, 32, 33, 64, 100, 8160]) {
      const info = new TextEncoder().encode(`len ${length}`)
      const expected = new Uint8Array(hkdfSync('sha256', ikm, salt, info, length))
      expect(hkdfExpandSha256(extract(salt, ikm), info, length)).toEqual(expected)
    }
  })

  it('differs from node:crypto hkdf applied to the PRK directly (which would extract again)', () => {
    const prk = hex(RFC5869[0]!.prk)
    const info = hex(RFC5869[0]!.info)
    const doubleExtracted = new Uint8Array(hkdfSync('sha256', prk, new Uint8Array(0), info, 42))
    expect(toHex(doubleExtracted)).not.toBe(RFC5869[0]!.okm)
  })

  it('rejects lengths HKDF cannot produce and short PRKs', () => {
    expect(() => hkdfExpandSha256(new Uint8Array(32), new Uint8Array(0), 255 * 32 + 1)).toThrow(RangeError)
    expect(() => hkdfExpandSha256(new Uint8Array(16), new Uint8Array(0), 16)).toThrow(RangeError)
  })
})
