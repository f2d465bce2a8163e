import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { P256Keypair } from '@atproto/crypto'
import * as plcLib from '@did-plc/lib'
import { startTransferPds, type TransferPds } from '@pds-transfer/atproto-pds'
import { generateRotationKey, writeRotationKeyFile } from '@pds-transfer/identity'
import type { Browser, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { launchChromium } from '../src/harness/chromium.ts'
import { freePort } from '../src/harness/destination-server.ts'
import { headlessAuthorize } from '../src/harness/headless-oauth.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'

const SHOTS = join(import.meta.dirname, '..', '..', 'test-artifacts', 'keys-browser')
const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js')

/**
 * Issue 21, the web half of rotation keys: a person whose account lives on a plain reference PDS
 * (nothing of ours installed) uses our /keys to see who can change their identity, makes a key
 * pair in the page, signs in at their own PDS with OAuth (through /migrate's shared callback),
 * types the emailed code (a wrong one first), and their key is first at PLC; the key file is then
 * recognised on the list page. Then without JavaScript on a 390 px screen.
 */
describe('/keys in Chromium', () => {
  let plc: PlcDirectory
  let plain: Awaited<ReturnType<typeof startPlainPds>>
  let ours: TransferPds
  let work: string
  let browser: Browser
  let alice: SeededAccount
  /** Alice's key, made in the page, once she has added it. */
  let aliceKey: string
  const violations: string[] = []

  beforeAll(async () => {
    await mkdir(SHOTS, { recursive: true })
    work = await mkdtemp(join(tmpdir(), 'keys-browser-'))
    plc = await startPlcDirectory()
    plain = await startPlainPds(plc.namedUrl)
    ours = await startTransferPds({
      dataDir: join(work, 'ours'),
      port: await freePort(),
      plcUrl: plc.namedUrl,
      // `.test` handles are known only to the PDS that made them.
      handleResolverUrl: plain.url,
      env: { bskyAppViewUrl: 'http://127.0.0.1:9', bskyAppViewDid: 'did:web:appview.invalid' },
    })
    alice = await seed('alice')
    browser = await launchChromium()
  }, 180_000)
  afterAll(async () => {
    await browser?.close()
    await ours?.close()
    await plain?.close()
    await plc?.close()
    if (work) await rm(work, { recursive: true, force: true })
  })

  const seed = (name: string) =>
    seedReferenceAccount(plain.url, {
      handle: `${name}.test`,
      email: `${name}@example.com`,
      password: `${name}-password-1`,
      posts: 1,
      images: 0,
      follows: 0,
    })

  const shooter = (page: Page, prefix: string) => {
    let step = 0
    return async (name: string) => {
      step++
      await page.screenshot({
        path: join(SHOTS, `${prefix}${String(step).padStart(2, '0')}-${name}.png`),
        fullPage: true,
      })
      // Only our pages are ours to judge (the PDS's sign-in is its own).
      if (new URL(page.url()).origin !== ours.url) return
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

  const keyFile = async (name: string, curve: 'p256' | 'k256' = 'p256') => {
    const path = join(work, `${name}.json`)
    const { file } = await generateRotationKey({ curve })
    await writeRotationKeyFile(path, file)
    return { path, publicKey: file.publicKey }
  }

  it('lists the keys, makes a key in the page, signs in, takes the code, and puts the key first', async () => {
    const page = await browser.newPage()
    const shot = shooter(page, '')
    const directory = new plcLib.Client(plc.url)
    const before = await directory.getDocumentData(alice.did)
    const pdsKey = plain.pds.ctx.plcRotationKey.did()
    expect(before.rotationKeys).toEqual([pdsKey])

    await page.goto(`${ours.url}/migrate`)
    await page.click('a[href="/keys"]')
    await page.waitForURL(/\/keys$/)
    await shot('start')
    await page.fill('#identifier', alice.handle)
    await page.click('button[type=submit]')
    await page.waitForURL(/\/keys\/list/)
    await expect(page.textContent('#keys')).resolves.toContain(pdsKey)
    await expect(page.textContent('main')).resolves.toContain(
      'No change to your identity in the last 72 hours',
    )
    await shot('list')

    // Someone else's key file: none of the keys is hers, and the page says so.
    const stranger = await keyFile('stranger')
    await page.setInputFiles('#keyfile', stranger.path)
    await page.waitForSelector('#keyfile-status:has-text("None of these keys is yours")')
    await shot('not-yours')

    // She makes a key pair here, saves the file, and confirms; only then is its public key filled in.
    await page.click('#keygen-make')
    await page.waitForSelector('#keygen-file[href^="blob:"]')
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#keygen-file')])
    const savedPath = join(work, 'alice-rotation-key.json')
    await download.saveAs(savedPath)
    const saved = JSON.parse(await readFile(savedPath, 'utf8')) as {
      account: string
      publicKey: string
      privateKeyHex: string
    }
    expect(saved.account).toBe(alice.did)
    expect((await P256Keypair.import(saved.privateKeyHex)).did()).toBe(saved.publicKey)
    expect(await page.inputValue('#rotationKey')).toBe('')
    await page.check('#keygen-confirm')
    expect(await page.inputValue('#rotationKey')).toBe(saved.publicKey)
    await shot('key-made')

    // Her PDS's own sign-in and consent pages (its OAuth provider, nothing of ours there).
    await page.click('#add-form button[type=submit]')
    await page.waitForURL((url) => url.origin === plain.url)
    await page.waitForLoadState('networkidle')
    await shot('pds-sign-in')
    await page.fill('input[autocomplete="current-password"]', alice.password)
    await page.click('button[type=submit]')
    const authorize = page.getByRole('button', { name: 'Authorize' })
    await authorize.waitFor()
    await shot('pds-consent')
    await authorize.click()

    // Back through the shared callback, on our /keys flow: the PDS has emailed the code.
    await page.waitForURL((url) => url.origin === ours.url && url.pathname.startsWith('/keys/add/'))
    await page.waitForSelector('#token')
    const code = (await plain.plcToken(alice.did)) as string
    expect(code).toMatch(/^[A-Z0-9]{5}-[A-Z0-9]{5}$/)
    // The scope granted is only what this needs.
    const session = await ours.authorizer.session(alice.did)
    expect(session?.scope.split(' ').sort()).toEqual(['atproto', 'identity:*'])
    await shot('code')

    await page.fill('#token', 'AAAAA-BBBBB')
    await page.click('form[action$="/complete"] button')
    await page.waitForSelector('#token-error')
    await expect(page.textContent('#token-error')).resolves.toContain('That code was not accepted')
    expect(await directory.getDocumentData(alice.did)).toEqual(before)
    await shot('wrong-code')

    await page.fill('#token', code.toLowerCase().replace('-', ' '))
    await page.click('form[action$="/complete"] button')
    await page.waitForSelector('h1:has-text("Your key is first")')
    await expect(page.textContent('#keys li:first-child')).resolves.toContain('(yours)')
    await shot('done')

    // PLC: her key first, the PDS's after it, nothing else changed.
    const after = await directory.getDocumentData(alice.did)
    expect(after).toEqual({ ...before, rotationKeys: [saved.publicKey, pdsKey] })
    // The identity:* session is not kept once the key is first.
    expect(await ours.authorizer.session(alice.did)).toBeUndefined()
    aliceKey = saved.publicKey

    // Her key file, chosen on the list page, is recognised as hers and first; the change is in words.
    await page.click('a:has-text("See your keys again")')
    await page.waitForURL(/\/keys\/list/)
    await expect(page.textContent('main')).resolves.toContain(`added rotation key ${saved.publicKey}`)
    await page.setInputFiles('#keyfile', savedPath)
    await page.waitForSelector('#keyfile-status.ok')
    await expect(page.textContent('#keyfile-status')).resolves.toContain('it is first')
    await expect(page.textContent('#keys li:first-child')).resolves.toContain('(yours)')
    await expect(page.isVisible('#add')).resolves.toBe(false)
    await shot('recognised')
    await page.close()
    expect(violations).toEqual([])
  }, 180_000)

  it('works without JavaScript on a 390 px screen: the list, pasted keys, and clear refusals', async () => {
    const context = await browser.newContext({
      viewport: { width: 390, height: 844 },
      javaScriptEnabled: false,
    })
    const page = await context.newPage()
    const shot = shooter(page, 'nojs-')
    const fits = async () =>
      expect(Number(await page.evaluate('document.documentElement.scrollWidth'))).toBeLessThanOrEqual(390)
    try {
      const bob = await seed('bob')
      await page.goto(`${ours.url}/keys`)
      await fits()
      await page.fill('#identifier', bob.did)
      await page.click('button[type=submit]')
      await page.waitForURL(/\/keys\/list/)
      await fits()
      // Making a key needs the script: the page says so and points to the command line.
      await expect(page.isVisible('#keygen')).resolves.toBe(false)
      await expect(page.isVisible('#in-browser')).resolves.toBe(false)
      await expect(page.textContent('noscript')).resolves.toContain('pds-identity keygen')
      await shot('list')

      // A private key pasted to check: refused by name, never echoed back.
      const { keypair } = await generateRotationKey({ curve: 'p256' })
      const privateHex = Buffer.from(await (keypair as P256Keypair).export()).toString('hex')
      await page.fill('#key', privateHex)
      await page.click('form[action="/keys/list"] button')
      await page.waitForSelector('#key-error')
      await expect(page.textContent('#key-error')).resolves.toContain('looks like a private key')
      expect(await page.inputValue('#key')).toBe('')
      await fits()
      await shot('private-key-checked')
      const stranger = await keyFile('stranger-nojs')
      await page.fill('#key', stranger.publicKey)
      await page.click('form[action="/keys/list"] button')
      await page.waitForSelector('#verdict:has-text("None of these keys is yours")')
      await shot('not-yours')

      // The same where the key to add goes.
      await page.fill('#rotationKey', privateHex)
      await page.click('#add-form button[type=submit]')
      await page.waitForSelector('#rotationKey-error')
      await expect(page.textContent('#rotationKey-error')).resolves.toContain('looks like a private key')
      await fits()
      await shot('private-key-added')

      // Alice's key, already first: checked, and refused as nothing to add.
      await page.goto(`${ours.url}/keys/list?identifier=${alice.did}&key=${aliceKey}`)
      await expect(page.textContent('#verdict')).resolves.toContain('Your key is first')
      await expect(page.isVisible('#add')).resolves.toBe(false)
      await shot('alice-first')
      await page.goto(`${ours.url}/keys/list?identifier=${alice.did}`)
      await page.fill('#rotationKey', aliceKey)
      await page.click('#add-form button[type=submit]')
      await page.waitForSelector('#rotationKey-error')
      await expect(page.textContent('#rotationKey-error')).resolves.toContain('already first')
      await shot('already-first')

      // An identity at PLC's five keys: no form, and why.
      const carol = await seed('carol')
      const others = await Promise.all([1, 2, 3, 4].map(async () => (await P256Keypair.create()).did()))
      await new plcLib.Client(plc.url).updateData(carol.did, plain.pds.ctx.plcRotationKey, (op) => ({
        ...op,
        rotationKeys: [...op.rotationKeys, ...others],
      }))
      await page.goto(`${ours.url}/keys/list?identifier=${carol.did}`)
      await expect(page.textContent('#add')).resolves.toContain('the most PLC allows')
      await expect(page.$('#add-form')).resolves.toBeNull()
      await expect(page.textContent('main')).resolves.toContain('added rotation key')
      await fits()
      await shot('five-keys')
      expect(violations).toEqual([])
    } finally {
      await context.close()
    }
  }, 120_000)

  it('says so when the sign-in is declined or grants less than identity:*, and asks for no code', async () => {
    const dave = await seed('dave')
    const { publicKey } = await keyFile('dave')
    const page = await browser.newPage()
    const shot = shooter(page, 'signin-')
    const post = (origin: string) =>
      fetch(`${ours.url}/keys/authorize`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded', origin },
        body: new URLSearchParams({ did: dave.did, rotationKey: publicKey }),
      })
    // A form posted from elsewhere starts nothing.
    expect((await post('https://elsewhere.example.com')).status).toBe(403)
    const started = await post(ours.url)
    expect(started.status).toBe(303)
    const account = { username: dave.handle, password: dave.password }
    // Declined at the PDS: the shared callback sends the browser back to /keys, which says so.
    const declined = await headlessAuthorize(new URL(started.headers.get('location') as string), account, {
      consent: false,
    })
    await page.goto(declined.toString())
    await page.waitForURL((url) => url.pathname.startsWith('/keys/add/'))
    await expect(page.textContent('[role=alert]')).resolves.toContain('You declined at your server')
    await shot('declined')
    // Signed in, but granted only `atproto` (as a PDS that offers less would): refused by name.
    const returnTo = new URL(page.url()).pathname
    const narrow = await ours.authorizer.authorize({
      did: dave.did,
      sourceUrl: plain.url,
      scope: 'atproto',
      returnTo,
    })
    await page.goto((await headlessAuthorize(narrow, account)).toString())
    await page.waitForURL((url) => url.pathname === returnTo)
    await expect(page.textContent('[role=alert]')).resolves.toContain(
      'did not allow this server to manage your identity',
    )
    await shot('scope-refused')
    expect(await plain.plcToken(dave.did)).toBeUndefined()
    // /migrate's own sign-ins are untouched: its start page still links here.
    await page.goto(`${ours.url}/migrate`)
    await expect(page.getAttribute('a[href="/keys"]', 'href')).resolves.toBe('/keys')
    await page.close()
    expect(violations).toEqual([])
  }, 120_000)
})
