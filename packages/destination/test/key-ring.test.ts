import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { DEFAULT_KEY_POLICY, KeyRing } from '../src/key-ring.ts'
import { SqliteKeyStore } from '../src/sqlite-key-store.ts'

const DAY = 86400
const T0 = 1_800_000_000

describe('KeyRing rotation (section 1.4)', () => {
  const stores: SqliteKeyStore[] = []
  afterEach(() => {
    for (const s of stores.splice(0)) s.close()
  })
  const ring = (path = ':memory:') => {
    const store = new SqliteKeyStore(path)
    stores.push(store)
    return new KeyRing(store, ['HPKE-3', 'HPKE-4'])
  }

  it('creates one key per suite valid for 90 days', async () => {
    const keys = ring()
    await keys.rotate(T0)
    const published = await keys.published(T0)
    expect(published.map((k) => k.alg).sort()).toEqual(['HPKE-3', 'HPKE-4'])
    expect(published.every((k) => k.exp === T0 + DEFAULT_KEY_POLICY.lifetime)).toBe(true)
    await keys.rotate(T0 + DAY)
    expect(await keys.published(T0 + DAY)).toHaveLength(2)
  })

  it('publishes a successor beside the old key, keeps the old one for in-flight transfers, then deletes it', async () => {
    const keys = ring()
    await keys.rotate(T0)
    const first = (await keys.current('HPKE-3', T0))!
    const overlapStart = first.exp! - DEFAULT_KEY_POLICY.overlap + 1
    await keys.rotate(overlapStart)
    const both = (await keys.published(overlapStart)).filter((k) => k.alg === 'HPKE-3')
    expect(both).toHaveLength(2)
    const second = (await keys.current('HPKE-3', overlapStart))!
    expect(second.kid).not.toBe(first.kid)

    // Expired: no longer published, still usable to decrypt until exp + grace.
    await keys.rotate(first.exp! + 1)
    expect((await keys.published(first.exp! + 1)).map((k) => k.kid)).not.toContain(first.kid)
    expect(await keys.byKid(first.kid)).toBeDefined()
    await keys.rotate(first.exp! + DEFAULT_KEY_POLICY.grace)
    expect(await keys.byKid(first.kid)).toBeUndefined()
    expect(await keys.byKid(second.kid)).toBeDefined()
  })

  it('persists keys across restarts', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'keyring-'))
    try {
      const a = ring(join(dir, 'keys.sqlite'))
      await a.rotate(T0)
      const before = await a.published(T0)
      const b = ring(join(dir, 'keys.sqlite'))
      await b.rotate(T0 + 1)
      expect(await b.published(T0 + 1)).toEqual(before)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
