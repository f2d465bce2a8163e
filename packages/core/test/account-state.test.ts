import { encode } from 'cborg'
import { describe, expect, it } from 'vitest'
import { decodeAccountState, encodeAccountState, withoutCredentials } from '../src/account-state.ts'
import { WireError } from '../src/errors.ts'

function reasonOf(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    if (err instanceof WireError) return `${err.reason}: ${err.message}`
    throw err
  }
  return 'no error'
}

describe('private account state (section 2.8)', () => {
  it('leaves credentials out of what may move (D24), and nothing else', () => {
    const state = {
      email: 'alice@example.com',
      emailConfirmed: true,
      inviteCodes: ['a-b-c'],
      appPasswords: [{ name: 'phone', passwordScrypt: 'salt:hash' }],
      mutedWords: ['x'],
    }
    expect(withoutCredentials(state)).toEqual({
      email: 'alice@example.com',
      emailConfirmed: true,
      inviteCodes: ['a-b-c'],
      mutedWords: ['x'],
    })
  })

  it('round-trips common and optional fields deterministically', () => {
    const state = {
      inviteCodes: ['a-b-c'],
      email: 'alice@example.com',
      emailConfirmed: true,
      appPasswords: [{ name: 'phone', hash: 'scrypt$...' }],
      mutedWords: ['spoilers'],
      pinnedFeeds: ['at://did:plc:x/app.bsky.feed.generator/y'],
      notificationRouting: { push: true },
    }
    const bytes = encodeAccountState(state)
    expect(Buffer.from(encodeAccountState({ ...state }))).toEqual(Buffer.from(bytes))
    expect(decodeAccountState(bytes)).toEqual({ state, ignoredFields: [] })
  })

  it('encodes the empty state as one byte (the exporter omits it)', () => {
    expect([...encodeAccountState({})]).toEqual([0xa0])
  })

  it('ignores unknown fields but reports them', () => {
    const bytes = encode({ email: 'a@b.c', futureThing: { x: 1 }, totpSecret: new Uint8Array(3) })
    expect(decodeAccountState(bytes)).toEqual({
      state: { email: 'a@b.c' },
      ignoredFields: ['totpSecret', 'futureThing'],
    })
  })

  it.each([
    ['not a map', encode(['email'])],
    ['a byte string', encode(new Uint8Array(2))],
    ['email not text', encode({ email: 5 })],
    ['emailConfirmed not boolean', encode({ emailConfirmed: 'yes' })],
    ['inviteCodes with a number', encode({ inviteCodes: ['x', 1] })],
    ['appPasswords not maps', encode({ appPasswords: ['p'] })],
    ['trailing bytes', Uint8Array.from([...encode({ email: 'a@b.c' }), 0x00])],
    ['duplicate key', Uint8Array.from([0xa2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x02])],
    ['truncated', encode({ email: 'alice@example.com' }).subarray(0, 8)],
    ['indefinite-length map', Uint8Array.from([0xbf, 0x61, 0x61, 0x01, 0xff])],
    ['non-text key', Uint8Array.from([0xa1, 0x01, 0x02])],
  ])('rejects %s', (_name, bytes) => {
    expect(reasonOf(() => decodeAccountState(bytes))).toMatch(/^InvalidAccountState/)
  })

  it('names the mistyped field', () => {
    expect(reasonOf(() => decodeAccountState(encode({ inviteCodes: 'abc' })))).toContain(
      'inviteCodes must be',
    )
    expect(reasonOf(() => encodeAccountState({ email: 3 as unknown as string }))).toContain('email must be')
  })
})
