import { P256Keypair, Secp256k1Keypair } from '@atproto/crypto'
import { beforeAll, describe, expect, it } from 'vitest'
import { MAX_PLC_ROTATION_KEYS, moveRotationKeys } from '../src/rotation-keys.ts'

describe('moveRotationKeys (decision D8, user key first)', () => {
  let recovery: string
  let sourcePds: string
  let ours: string
  let user: string
  beforeAll(async () => {
    ;[recovery, sourcePds, ours, user] = (await Promise.all(
      [0, 1, 2, 3].map(async () => (await Secp256k1Keypair.create()).did()),
    )) as [string, string, string, string]
  })

  it('keeps every current key in order and puts ours last', () => {
    expect(moveRotationKeys([recovery, sourcePds], ours)).toEqual([recovery, sourcePds, ours])
    expect(moveRotationKeys([sourcePds, recovery, ours], ours)).toEqual([sourcePds, recovery, ours])
  })

  it("puts the user's key first, once, and keeps the rest in order", async () => {
    expect(moveRotationKeys([sourcePds], ours, user)).toEqual([user, sourcePds, ours])
    expect(moveRotationKeys([recovery, sourcePds], ours, recovery)).toEqual([recovery, sourcePds, ours])
    expect(moveRotationKeys([sourcePds, recovery], ours, recovery)).toEqual([recovery, sourcePds, ours])
    const p256 = (await P256Keypair.create()).did()
    expect(moveRotationKeys([sourcePds], ours, p256)[0]).toBe(p256)
  })

  it('refuses what is not a usable did:plc rotation key', () => {
    expect(() => moveRotationKeys([sourcePds], ours, 'zQ3shnotadid')).toThrow(/not the did:key/)
    expect(() =>
      moveRotationKeys([sourcePds], ours, 'did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK'),
    ).toThrow(/secp256k1 or P-256/)
    expect(() => moveRotationKeys([sourcePds], ours, ours)).toThrow(/this server's key/)
  })

  it('refuses a list did:plc would reject (more than 5 keys after the source leaves)', async () => {
    const many = await Promise.all(
      Array.from({ length: MAX_PLC_ROTATION_KEYS - 1 }, async () => (await Secp256k1Keypair.create()).did()),
    )
    expect(moveRotationKeys([...many, sourcePds], ours)).toHaveLength(MAX_PLC_ROTATION_KEYS + 1)
    expect(() => moveRotationKeys([...many, sourcePds], ours, user)).toThrow(/allows 5/)
  })
})
