import { Secp256k1Keypair } from '@atproto/crypto'
import { describe, expect, it } from 'vitest'
import { accountOf, looksPrivate, normalizeCode, readPassword } from '../src/migrate-form.ts'

describe('what people type into /migrate', () => {
  it('finds the account in a handle, a DID, a pasted profile link or an at:// URI', () => {
    expect(accountOf(' @Alice.Example.com ')).toBe('alice.example.com')
    expect(accountOf('did:plc:abc123')).toBe('did:plc:abc123')
    expect(accountOf('https://bsky.app/profile/alice.example.com')).toBe('alice.example.com')
    expect(accountOf('https://bsky.app/profile/did:plc:abc123/post/3k2')).toBe('did:plc:abc123')
    expect(accountOf('https://bsky.app/profile/did%3Aplc%3Aabc123')).toBe('did:plc:abc123')
    expect(accountOf('at://did:plc:abc123/app.bsky.feed.post/3k2')).toBe('did:plc:abc123')
  })

  it('takes the code in lower case, with spaces or without the dash', () => {
    expect(normalizeCode(' abcde fghij ')).toBe('ABCDE-FGHIJ')
    expect(normalizeCode('abcdefghij')).toBe('ABCDE-FGHIJ')
    expect(normalizeCode('ABCDE-FGHIJ')).toBe('ABCDE-FGHIJ')
  })

  it('tells a pasted private key from a public did:key', async () => {
    const key = await Secp256k1Keypair.create({ exportable: true })
    expect(looksPrivate(Buffer.from(await key.export()).toString('hex'))).toBe(true)
    expect(looksPrivate('-----BEGIN PRIVATE KEY-----\nMIG...')).toBe(true)
    expect(looksPrivate('{"kty":"EC","crv":"P-256","d":"abc"}')).toBe(true)
    expect(looksPrivate(key.did())).toBe(false)
    expect(looksPrivate(key.did().slice('did:key:'.length))).toBe(false)
  })

  it('reads the password fields: empty, matching, or why not', () => {
    expect(readPassword({})).toBeUndefined()
    expect(readPassword({ password: 'a-long-pass', password2: 'a-long-pass' })).toBe('a-long-pass')
    expect(readPassword({ password: 'a-long-pass', password2: 'other' })).toMatchObject({
      error: expect.stringContaining('not the same'),
    })
  })
})
