import { createWriteStream } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { P256Keypair } from '@atproto/crypto'
import * as plcLib from '@did-plc/lib'
import { AccountArchive, FsArchiveStore, generateArchiveKeys } from '@pds-transfer/archive'
import type { TransferPds } from '@pds-transfer/atproto-pds'
import { backupAccount, backupReadApi } from '@pds-transfer/backup'
import { accountZip, PlcDidResolver, UPLOADED_COPY } from '@pds-transfer/destination'
import {
  generateRotationKey,
  restoreChallenge,
  runIdentityCli,
  writeRotationKeyFile,
} from '@pds-transfer/identity'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Browser, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { launchChromium } from '../src/harness/chromium.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { startReferencePds } from '../src/harness/reference-pds.ts'

const SHOTS = join(import.meta.dirname, '..', '..', 'test-artifacts', 'recover-browser')
const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js')
const TOKEN = 'backup-operator-secret'

/**
 * Issue 21, as a person takes their account back in Chromium: their old PDS A turned hostile
 * and moved the identity to an attacker (dropping the user's key); a backup of the account
 * exists. On C's /recover they name the account and the backup, prove their key with the key
 * file (in the page; never uploaded), follow the copy being read, sign the identity change,
 * choose a password, and sign in at C. Then the same without JavaScript, with the command line
 * (`pds-identity prove`, `pds-identity recover --submit`) doing the signing.
 */
describe('/recover in Chromium', () => {
  let plc: PlcDirectory
  let hostile: Awaited<ReturnType<typeof startPlainPds>>
  let c: TransferPds
  let work: string
  let api: FastifyInstance
  let backupUrl: string
  let browser: Browser
  const violations: string[] = []

  beforeAll(async () => {
    await mkdir(SHOTS, { recursive: true })
    work = await mkdtemp(join(tmpdir(), 'recover-browser-'))
    plc = await startPlcDirectory()
    hostile = await startPlainPds(plc.namedUrl)
    c = await startReferencePds(plc)
    browser = await launchChromium()
  }, 180_000)
  afterAll(async () => {
    await browser?.close()
    await api?.close()
    await c?.close()
    await hostile?.close()
    await plc?.close()
    if (work) await rm(work, { recursive: true, force: true })
  })

  /**
   * An account on A with the user's key first, backed up, then taken over by A: the identity
   * moved to an attacker's PDS and key, the user's key dropped. Returns its key file's path.
   */
  async function takenOver(
    handle: string,
    curve: 'p256' | 'k256',
    /** Also save the zip /migrate's checklist offers here, while A still serves the account. */
    zipTo?: string,
  ): Promise<{ who: SeededAccount; keyPath: string }> {
    const who = await seedReferenceAccount(hostile.url, {
      handle,
      email: `${handle}@example.com`,
      password: `${handle}-password`,
      posts: 15,
      images: 2,
      follows: 2,
    })
    const { file } = await generateRotationKey({ curve, account: who.did })
    const keyPath = join(work, `${handle}-rotation-key.json`)
    await writeRotationKeyFile(keyPath, file)
    const directory = new plcLib.Client(plc.url)
    const pdsKey = hostile.pds.ctx.plcRotationKey
    await directory.updateData(who.did, pdsKey, (op) => ({
      ...op,
      rotationKeys: [file.publicKey, ...op.rotationKeys],
    }))
    const keys = await generateArchiveKeys()
    const store = new FsArchiveStore(join(work, `archive-${handle}`))
    await backupAccount(who.did, {
      archive: new AccountArchive(store, keys, who.did),
      resolver: new PlcDidResolver(plc.url),
      workDir: work,
    })
    if (zipTo)
      await pipeline(
        accountZip({ source: hostile.url, did: who.did, handle, madeBy: 'test' }).stream,
        createWriteStream(zipTo),
      )
    const attacker = await P256Keypair.create()
    await directory.updateData(who.did, pdsKey, (op) => ({
      ...op,
      rotationKeys: [pdsKey.did()],
      verificationMethods: { atproto: attacker.did() },
      services: {
        atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: 'https://attacker.example.com' },
      },
    }))
    await api?.close()
    api = Fastify()
    await api.register(backupReadApi, {
      store,
      keys,
      resolver: new PlcDidResolver(plc.url),
      serviceDid: 'did:web:backups.example.com',
      operatorToken: TOKEN,
      workDir: work,
    })
    backupUrl = await api.listen({ port: 0, host: '127.0.0.1' })
    return { who, keyPath }
  }

  const shooter = (page: Page, prefix: string) => {
    let step = 0
    return async (name: string) => {
      step++
      await page.screenshot({
        path: join(SHOTS, `${prefix}${String(step).padStart(2, '0')}-${name}.png`),
        fullPage: true,
      })
      if (!(await page.evaluate('typeof document !== "undefined"'))) return
      await page.addScriptTag({ path: AXE }).catch(() => undefined)
      const found = (await page
        .evaluate(`window.axe ? axe.run().then((r) => r.violations) : []`)
        .catch(() => [])) as { id: string; impact: string; nodes: { target: string[] }[] }[]
      for (const v of found)
        violations.push(
          `${prefix}${name}: ${v.id} (${v.impact}) at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`,
        )
    }
  }

  it('takes a hijacked account back with the key file, in the page', async () => {
    const { who, keyPath } = await takenOver('gina.test', 'p256')
    const page = await browser.newPage()
    const shot = shooter(page, '')
    await page.goto(`${c.url}/recover`)
    await shot('start')
    // Her handle no longer resolves (the attacker's server answers for nothing): the page says what to do.
    await page.fill('#identifier', who.handle)
    await page.fill('#source', backupUrl)
    await page.fill('#token', TOKEN)
    await page.click('button[type=submit]')
    await page.waitForSelector('#identifier-error')
    await expect(page.textContent('#identifier-error')).resolves.toContain('paste your DID')
    await shot('handle-not-found')
    await page.fill('#identifier', who.did)
    await page.fill('#token', 'wrong-token')
    await page.click('button[type=submit]')
    await page.waitForSelector('#source-error')
    await expect(page.textContent('#source-error')).resolves.toContain('refused the access token')
    await page.fill('#token', TOKEN)
    await page.click('button[type=submit]')
    await page.waitForSelector('h1:has-text("Prove it is your account")')
    await expect(page.textContent('main')).resolves.toContain('https://attacker.example.com')
    await expect(page.textContent('main')).resolves.toContain('changed in the last 72 hours')
    await shot('proof')

    // A key that is not hers (a stranger's file) is named as such; a secp256k1 file is sent to the CLI.
    const stranger = join(work, 'stranger.json')
    await writeRotationKeyFile(stranger, (await generateRotationKey({ curve: 'p256' })).file)
    await page.setInputFiles('#keyfile', stranger)
    await page.waitForSelector('#keyfile-status.error')
    await expect(page.textContent('#keyfile-status')).resolves.toContain('is not one of your identity')
    await shot('wrong-key')
    const k256 = join(work, 'k256.json')
    await writeRotationKeyFile(k256, (await generateRotationKey({ curve: 'k256' })).file)
    await page.setInputFiles('#keyfile', k256)
    await page.waitForSelector('#keyfile-status.error:has-text("secp256k1")')
    await expect(page.getAttribute('#by-hand', 'open')).resolves.not.toBeNull()
    await shot('k256-key')
    await page.setInputFiles('#keyfile', keyPath)
    await page.waitForSelector('#keyfile-status.ok')
    // The upload never carries the file: the input has no name.
    expect(await page.getAttribute('#keyfile', 'name')).toBeNull()
    await shot('key-chosen')
    await page.click('#start')

    await page.waitForURL(/\/recover\/restore\//)
    const restoreUrl = page.url()
    await page.waitForSelector('h2:has-text("What signing does")', { timeout: 60_000 })
    await expect(page.textContent('main')).resolves.toContain('It undoes 1 change made without you')
    await expect(page.textContent('main')).resolves.toContain('Not in the copy, so not restored')
    await shot('sign-step')
    await page.setInputFiles('#keyfile', keyPath)
    // The backup was made without her sign-in, so it has no email: she gives the one to use here.
    await page.fill('#email', 'gina@new.example.com')
    await page.fill('#password', 'gina-new-password')
    await page.fill('#password2', 'gina-new-password')
    await page.click('#sign-form button[type=submit]')
    await page.waitForSelector('h1:has-text("Account restored")', { timeout: 60_000 })
    await shot('restored')
    await expect(page.textContent('ol')).resolves.toContain('✓ Done')

    const directory = new plcLib.Client(plc.url)
    const data = await directory.getDocumentData(who.did)
    expect(data.services.atproto_pds?.endpoint).toBe(c.url)
    expect(data.rotationKeys[0]).toBe((await page.textContent('main ol:last-of-type li')) ?? '')
    expect((await directory.getAuditableLog(who.did)).filter((e) => e.nullified)).toHaveLength(1)
    const session = await fetch(`${c.url}/xrpc/com.atproto.server.createSession`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ identifier: 'gina@new.example.com', password: 'gina-new-password' }),
    })
    expect(session.status).toBe(200)
    const id = new URL(restoreUrl).pathname.split('/').at(-1) as string
    expect(await c.engine.get(id)).toMatchObject({ status: 'completed', dialect: 'restore' })
    await page.close()
    expect(violations).toEqual([])
  }, 180_000)

  it('takes an account back from the zip it kept, uploaded in the page', async () => {
    const zip = join(work, 'jade.test-backup.zip')
    const { who, keyPath } = await takenOver('jade.test', 'p256', zip)
    const page = await browser.newPage()
    const shot = shooter(page, 'upload-')
    await page.goto(`${c.url}/recover`)
    await page.fill('#identifier', who.did)
    await page.check('input[name=copy][value=file]')
    // The address fields step aside once "a file I kept" is chosen.
    await expect(page.isVisible('#source')).resolves.toBe(false)
    await shot('start')
    await page.click('button[type=submit]')
    await page.waitForSelector('h1:has-text("Prove it is your account")')
    await expect(page.textContent('main')).resolves.toContain('a file you choose below')
    await page.setInputFiles('#keyfile', keyPath)
    await page.waitForSelector('#keyfile-status.ok')
    // A file that is not an export is refused by name, and nothing of it is kept.
    const notes = join(work, 'notes.zip')
    await writeFile(notes, 'not a zip at all')
    await page.setInputFiles('#copyfile', notes)
    await shot('files-chosen')
    await page.click('#start')
    // Said where the file was chosen; the key stays loaded, so only the file is chosen again.
    await page.waitForSelector('#upload-status.error:has-text("not a zip")')
    await shot('not-a-zip')
    const uploaded = async () => (await readdir(c.copies.dir)).filter((n) => !n.endsWith('.address.json'))
    expect(await uploaded()).toEqual([])
    await page.setInputFiles('#copyfile', zip)
    await page.click('#start')
    await page.waitForURL(/\/recover\/restore\//)
    await page.waitForSelector('h2:has-text("What signing does")', { timeout: 60_000 })
    // The zip held the repo and images; preferences and email were never in it.
    await expect(page.textContent('main')).resolves.toContain('Not in the copy, so not restored')
    await shot('sign-step')
    await page.setInputFiles('#keyfile', keyPath)
    await page.fill('#email', 'jade@new.example.com')
    await page.fill('#password', 'jade-new-password')
    await page.fill('#password2', 'jade-new-password')
    await page.click('#sign-form button[type=submit]')
    await page.waitForSelector('h1:has-text("Account restored")', { timeout: 60_000 })
    await shot('restored')
    const data = await new plcLib.Client(plc.url).getDocumentData(who.did)
    expect(data.services.atproto_pds?.endpoint).toBe(c.url)
    const res = await fetch(`${c.url}/xrpc/com.atproto.sync.listBlobs?did=${who.did}`)
    expect(((await res.json()) as { cids: string[] }).cids).toHaveLength(2)
    // Once the restore is done, its upload goes at the next sweep.
    expect(await uploaded()).toHaveLength(2) // the zip and its note
    await c.copies.sweep((id) => c.engine.get(id))
    expect(await uploaded()).toEqual([])
    await page.close()
    expect(violations).toEqual([])
  }, 180_000)

  it('works without JavaScript on a small screen, the command line signing', async () => {
    const { who, keyPath } = await takenOver('hugo.test', 'k256')
    const context = await browser.newContext({
      viewport: { width: 390, height: 844 },
      javaScriptEnabled: false,
    })
    const page = await context.newPage()
    const shot = shooter(page, 'nojs-')
    const cli = async (...argv: string[]) => {
      const out: string[] = []
      const err: string[] = []
      const code = await runIdentityCli(argv, { out: (t) => out.push(t), err: (t) => err.push(t) })
      expect(code, err.join('')).toBe(0)
      return out
    }
    await page.goto(`${c.url}/recover`)
    await page.fill('#identifier', who.did)
    await page.fill('#source', backupUrl)
    await page.fill('#token', TOKEN)
    await page.click('button[type=submit]')
    await page.waitForSelector('h1:has-text("Prove it is your account")')
    await page.click('#by-hand summary')
    await shot('proof')
    const command = (await page.textContent('#by-hand pre')) as string
    const challenge = /--challenge (\S+)/.exec(command)?.[1] as string
    const out = await cli('prove', '--key', keyPath, '--challenge', challenge)
    await page.fill('#userKey', out.find((l) => l.startsWith('key: '))?.slice(5) as string)
    await page.fill('#signature', out.find((l) => l.startsWith('signature: '))?.slice(11) as string)
    await page.click('#start')
    await page.waitForURL(/\/recover\/restore\//)
    // Without scripts the page refreshes itself until the copy is read.
    await page.waitForSelector('h2:has-text("What signing does")', { timeout: 60_000 })
    await page.click('#by-hand summary')
    await shot('sign-step')
    // The command the page gives, run where the key file is; what it prints is pasted back.
    const recover = (await page.textContent('#by-hand pre')) as string
    const args = recover
      .trim()
      .split(/\s+/)
      .slice(1)
      .map((a) => (a === 'rotation-key.json' ? keyPath : a))
    const printed = await cli(...args, '--plc', plc.url)
    await page.fill('#signedOperation', printed.join('\n'))
    await page.fill('#email', 'hugo@new.example.com')
    await page.fill('#password', 'hugo-new-password')
    await page.fill('#password2', 'hugo-new-password')
    await shot('pasted')
    await page.click('#sign-form button[type=submit]')
    await page.waitForSelector('h1:has-text("Account restored")', { timeout: 60_000 })
    await shot('restored')
    const session = await fetch(`${c.url}/xrpc/com.atproto.server.createSession`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ identifier: who.did, password: 'hugo-new-password' }),
    })
    expect(session.status).toBe(200)
    const data = await new plcLib.Client(plc.url).getDocumentData(who.did)
    expect(data.services.atproto_pds?.endpoint).toBe(c.url)
    await context.close()
    expect(violations).toEqual([])
  }, 180_000)

  it('starts nothing for a proof that is not the key holder’s', async () => {
    const { who, keyPath } = await takenOver('ivan.test', 'p256')
    const userKey = JSON.parse(await readFile(keyPath, 'utf8')).publicKey as string
    const stranger = await P256Keypair.create()
    const start = async (fields: Record<string, string>) =>
      fetch(`${c.url}/recover/start`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', origin: new URL(c.url).origin },
        body: new URLSearchParams({ did: who.did, source: backupUrl, token: TOKEN, userKey, ...fields }),
      })
    const challenge = restoreChallenge({ serviceDid: c.serviceDid, did: who.did, source: backupUrl })
    const signed = async (text: string) =>
      Buffer.from(await stranger.sign(new TextEncoder().encode(text))).toString('base64url')
    // The user's public key (anyone can read it at PLC) with someone else's signature.
    const forged = await start({
      challenge: Buffer.from(challenge).toString('base64'),
      signature: await signed(challenge),
    })
    expect(forged.status).toBe(400)
    expect(await forged.text()).toContain(`the signature is not made by ${userKey}`)
    // A challenge for another copy (where an attacker would point the restore).
    const elsewhere = restoreChallenge({
      serviceDid: c.serviceDid,
      did: who.did,
      source: 'https://evil.example.com',
    })
    const moved = await start({
      challenge: Buffer.from(elsewhere).toString('base64'),
      signature: await signed(elsewhere),
    })
    expect(await moved.text()).toContain('not this restore')
    // The same forged proof with a file: refused before a byte of the file is kept.
    const upload = restoreChallenge({ serviceDid: c.serviceDid, did: who.did, source: UPLOADED_COPY })
    const body = new FormData()
    for (const [name, value] of Object.entries({
      did: who.did,
      source: UPLOADED_COPY,
      userKey,
      challenge: Buffer.from(upload).toString('base64'),
      signature: await signed(upload),
    }))
      body.set(name, value)
    body.set('copy', new Blob([Buffer.alloc(4 * 1024 * 1024, 7)]), 'copy.zip')
    const before = await readdir(c.copies.dir).catch(() => [])
    const save = vi.spyOn(c.copies, 'save')
    const withFile = await fetch(`${c.url}/recover/start`, {
      method: 'POST',
      headers: { origin: new URL(c.url).origin },
      body,
    })
    expect(withFile.status).toBe(400)
    expect(await withFile.text()).toContain(`the signature is not made by ${userKey}`)
    expect(await readdir(c.copies.dir).catch(() => [])).toEqual(before)
    expect(save).not.toHaveBeenCalled()
    save.mockRestore()
    expect(await c.engine.unfinished(who.did)).toBeUndefined()
    // /migrate points people whose server is gone here.
    expect(await (await fetch(`${c.url}/migrate`)).text()).toContain(
      '<a href="/recover">Take your account back</a>',
    )
  })
})
