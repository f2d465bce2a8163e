import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Keypair, Secp256k1Keypair } from '@atproto/crypto'
import * as plc from '@did-plc/lib'
import {
  IdentityError,
  planRecovery,
  readRotationKeyFile,
  recoveryOperation,
  runIdentityCli,
} from '@pds-transfer/identity'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'

/**
 * Issue 21, adversarial recovery's identity step, against a real PLC directory
 * (`@did-plc/server`): the user's own rotation key takes the identity back from a hostile
 * change by the old server's key, within PLC's rules, and is refused with the reason where PLC
 * would refuse (a key ranked below the one that made the change, no key of the user's, after 72
 * hours). The signing happens here, with the key file; nothing but the signed operation leaves.
 */
describe("recovery of an identity with the user's own rotation key", () => {
  let plcDir: PlcDirectory
  let client: plc.Client
  let work: string
  let userKeyPath: string
  let user: Keypair

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    client = new plc.Client(plcDir.url)
    work = await mkdtemp(join(tmpdir(), 'identity-'))
    userKeyPath = join(work, 'user-key.json')
    expect((await cli('keygen', '--out', userKeyPath)).code).toBe(0)
    user = (await readRotationKeyFile(userKeyPath)).keypair
  })
  afterAll(async () => {
    await plcDir?.close()
    if (work) await rm(work, { recursive: true, force: true })
  })

  async function cli(...argv: string[]) {
    const out: string[] = []
    const err: string[] = []
    const code = await runIdentityCli([...argv, '--plc', plcDir?.url ?? ''], {
      out: (t) => out.push(t),
      err: (t) => err.push(t),
    })
    return { code, out: out.join('\n'), err: err.join('') }
  }

  /** An identity on "the old server" whose key is `pds`, with `rotationKeys`, then a hostile change signed by `pds`. */
  async function hijacked(rotationKeys: (pds: Keypair) => string[]) {
    const pds = await Secp256k1Keypair.create()
    const signing = await Secp256k1Keypair.create()
    const did = await client.createDid({
      signingKey: signing.did(),
      handle: `victim${Math.random().toString(36).slice(2, 8)}.test`,
      pds: 'https://old-pds.example.com',
      rotationKeys: rotationKeys(pds),
      signer: pds,
    })
    const attacker = await Secp256k1Keypair.create()
    // The old server turns hostile: the identity to its friend's PDS, the user's key gone.
    await client.updateData(did, pds, (op) => ({
      ...op,
      rotationKeys: [pds.did(), attacker.did()],
      verificationMethods: { atproto: attacker.did() },
      services: {
        atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: 'https://attacker.example.com' },
      },
    }))
    return { did, pds, attacker }
  }

  it('undoes a hostile change with a higher-ranked user key, and PLC accepts it', async () => {
    const { did } = await hijacked((pds) => [user.did(), pds.did()])
    const newPds = await Secp256k1Keypair.create()
    const newSigning = await Secp256k1Keypair.create()

    const keys = await cli('keys', did, '--key', userKeyPath)
    expect(keys.out).toMatch(/^1\. did:key:.*\n2\. did:key:/)
    expect(keys.out).toMatch(/none of these is yours/)
    expect(keys.out).toMatch(/a key ranked above it can undo this until /)

    const recovered = await cli(
      'recover',
      did,
      '--key',
      userKeyPath,
      '--pds',
      'https://new-pds.example.com',
      '--signing-key',
      newSigning.did(),
      '--pds-rotation-key',
      newPds.did(),
      '--submit',
    )
    expect(recovered.code, recovered.err).toBe(0)
    expect(recovered.err).toMatch(/undoing 1 change\(s\) made without you/)
    expect(recovered.err).toMatch(/PLC accepted it/)
    const data = await client.getDocumentData(did)
    expect(data.services.atproto_pds?.endpoint).toBe('https://new-pds.example.com')
    expect(data.verificationMethods.atproto).toBe(newSigning.did())
    expect(data.rotationKeys).toEqual([user.did(), newPds.did()])
    const log = await client.getAuditableLog(did)
    expect(log.map((op) => op.nullified)).toEqual([false, true, false])
    // The key file's private key stayed here: only the signed operation went to PLC.
    expect(JSON.stringify(log)).not.toContain((await readRotationKeyFile(userKeyPath)).file.privateKeyHex)
  })

  it('refuses, with the reason PLC has, a user key ranked below the key that made the change', async () => {
    const { did } = await hijacked((pds) => [pds.did(), user.did()])
    const log = await client.getAuditableLog(did)
    const refusal = await planRecovery(log, user.did()).catch((e: unknown) => e)
    expect(refusal).toBeInstanceOf(IdentityError)
    expect((refusal as IdentityError).reason).toBe('KeyTooWeak')
    // PLC agrees: the same fork, signed anyway, is refused.
    const forced = await recoveryOperation(
      {
        kind: 'update',
        prev: (log[0] as plc.ExportedOp).cid,
        base: plc.normalizeOp((log[0] as plc.ExportedOp).operation as plc.CompatibleOp),
      },
      user,
      { pds: 'https://new-pds.example.com', signingKey: user.did() },
    )
    await expect(client.sendOperation(did, forced)).rejects.toThrow()
    const cli1 = await cli(
      'recover',
      did,
      '--key',
      userKeyPath,
      '--pds',
      'https://new-pds.example.com',
      '--signing-key',
      user.did(),
    )
    expect(cli1.code).toBe(1)
    expect(cli1.err).toMatch(/^refused \(KeyTooWeak\): .*ranked 1 .*yours is ranked 2/)
    expect(cli1.err).toMatch(/what you can do: /)
  })

  it("refuses after 72 hours and without a key of the user's, saying what is still possible", async () => {
    const { did } = await hijacked((pds) => [user.did(), pds.did()])
    const log = await client.getAuditableLog(did)
    const late = new Date(new Date((log[1] as plc.ExportedOp).createdAt).getTime() + 73 * 3_600_000)
    const closed = await planRecovery(log, user.did(), late).catch((e: unknown) => e as IdentityError)
    expect(closed).toMatchObject({ reason: 'WindowClosed' })
    const out: string[] = []
    const lateCli = await runIdentityCli(
      [
        'recover',
        did,
        '--key',
        userKeyPath,
        '--pds',
        'https://new.example.com',
        '--signing-key',
        user.did(),
        '--plc',
        plcDir.url,
      ],
      { out: () => {}, err: (t) => out.push(t) },
      { now: () => late },
    )
    expect(lateCli).toBe(1)
    expect(out.join('')).toMatch(/refused \(WindowClosed\): .* more than 72 hours old/)

    const { did: withoutUser } = await hijacked((pds) => [pds.did()])
    const none = await cli(
      'recover',
      withoutUser,
      '--key',
      userKeyPath,
      '--pds',
      'https://new.example.com',
      '--signing-key',
      user.did(),
    )
    expect(none.err).toMatch(/refused \(NoUserKey\): .* has never been one of this identity's rotation keys/)
    expect(none.err).toMatch(/Next time, add a key of your own/)
  })

  it("moves an identity whose key is still the user's with a plain new operation", async () => {
    const pds = await Secp256k1Keypair.create()
    const did = await client.createDid({
      signingKey: pds.did(),
      handle: 'calm.test',
      pds: 'https://old-pds.example.com',
      rotationKeys: [user.did(), pds.did()],
      signer: pds,
    })
    const plan = await planRecovery(await client.getAuditableLog(did), user.did())
    expect(plan.kind).toBe('update')
    await client.sendOperation(
      did,
      await recoveryOperation(plan, user, { pds: 'https://new-pds.example.com', signingKey: user.did() }),
    )
    expect((await client.getDocumentData(did)).rotationKeys).toEqual([user.did()])
    expect((await client.getDocumentData(did)).alsoKnownAs).toEqual(['at://calm.test'])
  })
})
