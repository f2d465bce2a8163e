import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as plc from '@did-plc/lib'
import { addRotationKey, readRotationKeyFile, runIdentityCli } from '@pds-transfer/identity'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'

/**
 * Issue 21, the preparation that makes recovery possible: the user's own key put first in the
 * rotation keys of an account on a reference PDS, through the PDS's emailed code
 * (`pds-identity add-key`), and later used to take the identity back from that PDS's own key.
 */
describe("the user's rotation key added first through the account's PDS", () => {
  let plcDir: PlcDirectory
  let pds: Awaited<ReturnType<typeof startPlainPds>>
  let work: string
  let alice: SeededAccount
  let keyPath: string
  let userKey: string

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    pds = await startPlainPds(plcDir.namedUrl)
    work = await mkdtemp(join(tmpdir(), 'identity-add-'))
    alice = await seedReferenceAccount(pds.url, {
      handle: 'keyholder.test',
      email: 'keyholder@example.com',
      password: 'keyholder-password',
      posts: 2,
      images: 0,
      follows: 0,
    })
    keyPath = join(work, 'alice-key.json')
    expect((await cli('keygen', '--out', keyPath)).code).toBe(0)
    userKey = (await readRotationKeyFile(keyPath)).file.publicKey
  }, 120_000)
  afterAll(async () => {
    await pds?.close()
    await plcDir?.close()
    if (work) await rm(work, { recursive: true, force: true })
  })

  async function cli(...argv: string[]) {
    const out: string[] = []
    const err: string[] = []
    const code = await runIdentityCli([...argv, '--plc', plcDir.url], {
      out: (t) => out.push(t),
      err: (t) => err.push(t),
    })
    return { code, out: out.join('\n'), err: err.join('') }
  }

  async function withPassword<T>(password: string, run: () => Promise<T>): Promise<T> {
    process.env.PDS_IDENTITY_PASSWORD = password
    try {
      return await run()
    } finally {
      delete process.env.PDS_IDENTITY_PASSWORD
    }
  }

  it('refuses an operation from the PDS that changes more than the keys, and submits nothing', async () => {
    await withPassword(alice.password, () => cli('add-key', alice.did, '--key', keyPath))
    const code = (await pds.plcToken(alice.did)) as string
    const before = await new plc.Client(plcDir.url).getAuditableLog(alice.did)
    // A PDS that slips its own change into the operation it signs.
    const tampering: typeof fetch = async (input, init) => {
      const res = await fetch(input, init)
      if (!String(input).includes('signPlcOperation') || !res.ok) return res
      const body = (await res.json()) as { operation: { services: Record<string, unknown> } }
      body.operation.services.atproto_pds = {
        type: 'AtprotoPersonalDataServer',
        endpoint: 'https://elsewhere.example.com',
      }
      return new Response(JSON.stringify(body), { status: 200, headers: res.headers })
    }
    await expect(
      addRotationKey({
        pds: pds.url,
        did: alice.did,
        password: alice.password,
        userKey,
        code,
        plc: new plc.Client(plcDir.url),
        fetch: tampering,
      }),
    ).rejects.toMatchObject({ reason: 'UnexpectedOperation' })
    expect(await new plc.Client(plcDir.url).getAuditableLog(alice.did)).toEqual(before)
  })

  it('asks for the code, then puts the key first; a wrong password is refused by name', async () => {
    const wrong = await withPassword('not-the-password', () => cli('add-key', alice.did, '--key', keyPath))
    expect(wrong.code).toBe(1)
    expect(wrong.err).toMatch(/refused \(PdsRefused\): your PDS refused: com\.atproto\.server\.createSession/)

    const asked = await withPassword(alice.password, () => cli('add-key', alice.did, '--key', keyPath))
    expect(asked.code, asked.err).toBe(0)
    expect(asked.out).toMatch(/has emailed the account a code; run again with --code CODE/)
    const code = (await pds.plcToken(alice.did)) as string
    expect(code).toBeTruthy()
    const pdsKey = pds.pds.ctx.plcRotationKey.did()
    const added = await withPassword(alice.password, () =>
      cli('add-key', alice.did, '--key', keyPath, '--code', code),
    )
    expect(added.code, added.err).toBe(0)
    expect(added.out).toMatch(/PLC now lists your key first/)
    const data = await new plc.Client(plcDir.url).getDocumentData(alice.did)
    expect(data.rotationKeys).toEqual([userKey, pdsKey])
    expect(data.services.atproto_pds?.endpoint).toBe(pds.url)
    expect((await cli('keys', alice.did, '--key', keyPath)).out).toMatch(/^1\. did:key:\S+ {2}\(yours\)$/m)
  })

  it('then takes the identity back from the same PDS turned hostile, with that key', async () => {
    const client = new plc.Client(plcDir.url)
    // The PDS, with its own rotation key, moves the identity away and drops the user's key.
    await client.updateData(alice.did, pds.pds.ctx.plcRotationKey, (op) => ({
      ...op,
      rotationKeys: [pds.pds.ctx.plcRotationKey.did()],
      services: {
        atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: 'https://hostile.example.com' },
      },
    }))
    const back = await cli(
      'recover',
      alice.did,
      '--key',
      keyPath,
      '--pds',
      'https://new-home.example.com',
      '--signing-key',
      userKey,
      '--submit',
    )
    expect(back.code, back.err).toBe(0)
    expect(back.err).toMatch(/undoing 1 change\(s\) made without you/)
    const data = await client.getDocumentData(alice.did)
    expect(data.services.atproto_pds?.endpoint).toBe('https://new-home.example.com')
    expect(data.rotationKeys).toEqual([userKey])
  })
})
