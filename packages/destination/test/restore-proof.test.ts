import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { P256Keypair, Secp256k1Keypair } from '@atproto/crypto'
import {
  generateRotationKey,
  restoreChallenge,
  runIdentityCli,
  writeRotationKeyFile,
} from '@pds-transfer/identity'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { checkRestoreProof } from '../src/restore-proof.ts'

const scope = {
  serviceDid: 'did:web:new-pds.example.com',
  did: 'did:plc:ewvi7nxzyoun6zhxrhs64oiz',
  source: 'https://backups.example.com',
}
const now = new Date('2026-12-05T12:00:00Z')

/** The key proof that starts a restore (restore-proof.ts), signed as `pds-identity prove` signs it. */
describe('restore proof of key', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'restore-proof-'))
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))

  async function prove(curve: 'p256' | 'k256', text: string) {
    const { file } = await generateRotationKey({ curve })
    const path = join(dir, `${curve}-${Math.random()}.json`)
    await writeRotationKeyFile(path, file)
    const out: string[] = []
    const err: string[] = []
    const code = await runIdentityCli(
      ['prove', '--key', path, '--challenge', Buffer.from(text).toString('base64')],
      { out: (t) => out.push(t), err: (t) => err.push(t) },
    )
    const signature = out.find((l) => l.startsWith('signature: '))?.slice('signature: '.length)
    return { code, signature, userKey: file.publicKey, err: err.join('') }
  }

  it('accepts the CLI signature of either curve over the challenge', async () => {
    const challenge = restoreChallenge(scope, now)
    for (const curve of ['p256', 'k256'] as const) {
      const { code, signature, userKey } = await prove(curve, challenge)
      expect(code).toBe(0)
      await expect(
        checkRestoreProof(scope, { challenge, signature: signature as string, userKey }, now),
      ).resolves.toBeUndefined()
    }
  })

  it('refuses another key, another scope, and an expired challenge', async () => {
    const challenge = restoreChallenge(scope, now)
    const { signature } = await prove('p256', challenge)
    const other = (await P256Keypair.create()).did()
    await expect(
      checkRestoreProof(scope, { challenge, signature: signature as string, userKey: other }, now),
    ).rejects.toMatchObject({ code: 'InvalidRotationKey' })
    await expect(
      checkRestoreProof(
        { ...scope, source: 'https://attacker.example' },
        { challenge, signature: signature as string, userKey: other },
        now,
      ),
    ).rejects.toMatchObject({ code: 'InvalidState', message: expect.stringMatching(/not this restore/) })
    await expect(
      checkRestoreProof(
        scope,
        { challenge, signature: signature as string, userKey: other },
        new Date(now.getTime() + 16 * 60_000),
      ),
    ).rejects.toMatchObject({ message: expect.stringMatching(/expired/) })
  })

  it('refuses a high-S signature (PLC and @atproto/crypto accept only low-S)', async () => {
    const challenge = restoreChallenge(scope, now)
    const key = await Secp256k1Keypair.create()
    const sig = await key.sign(new TextEncoder().encode(challenge))
    const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n
    const s = BigInt(`0x${Buffer.from(sig.slice(32)).toString('hex')}`)
    const high = Buffer.concat([sig.slice(0, 32), Buffer.from((n - s).toString(16).padStart(64, '0'), 'hex')])
    await expect(
      checkRestoreProof(scope, { challenge, signature: high.toString('base64url'), userKey: key.did() }, now),
    ).rejects.toMatchObject({ code: 'InvalidRotationKey' })
  })

  it('the CLI signs nothing but a restore challenge (never, say, a PLC operation)', async () => {
    const { code, signature, err } = await prove('p256', '{"type":"plc_operation"}')
    expect(code).toBe(1)
    expect(signature).toBeUndefined()
    expect(err).toMatch(/InvalidChallenge/)
  })
})
