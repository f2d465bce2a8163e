import { describe, expect, it } from 'vitest'
import { clientOrigin } from '../src/destination-keys.ts'

const loopback =
  'http://localhost?redirect_uri=http%3A%2F%2F127.0.0.1%3A4321%2Fmigrate%2Fcallback&scope=atproto'

describe('clientOrigin (decision 4, D17)', () => {
  it('is the origin of a web client_id', () => {
    expect(clientOrigin('https://pds.example.com/.well-known/oauth-client-metadata/migration')).toBe(
      'https://pds.example.com',
    )
  })

  it('refuses a loopback client by default: it has no origin of its own', () => {
    expect(() => clientOrigin(loopback)).toThrow(/loopback OAuth client has no origin/)
  })

  it('in development, locates a loopback client at its single redirect URI', () => {
    expect(clientOrigin(loopback, { allowLoopback: true })).toBe('http://127.0.0.1:4321')
    const two = `${loopback}&redirect_uri=${encodeURIComponent('http://127.0.0.1:9/cb')}`
    expect(() => clientOrigin(two, { allowLoopback: true })).toThrow(/single redirect_uri/)
  })

  it('refuses a client_id that is not a URL', () => {
    expect(() => clientOrigin('not a url')).toThrow(/not a URL/)
  })
})
