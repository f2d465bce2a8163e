import { mkdir, mkdtemp, readdir, readFile, rename, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { P256Keypair } from '@atproto/crypto'
import { CID } from 'multiformats/cid'
import type { Browser, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { launchChromium } from '../src/harness/chromium.ts'
import { startDraftPds } from '../src/harness/draft-pds.ts'
import { headlessAuthorize } from '../src/harness/headless-oauth.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type ReferencePdsPair, startReferencePdsPair } from '../src/harness/reference-pds.ts'
import { servedBackup } from '../src/harness/served-backup.ts'
import { unzip } from '../src/harness/unzip.ts'

/** Screenshots of each step, kept as artifacts of the run. */
const SHOTS = join(import.meta.dirname, '..', '..', 'test-artifacts', 'migrate-browser')
const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js')

/**
 * A person's migration in real headless Chromium: B's /migrate, the checklist, A's own OAuth
 * sign-in and consent pages, the live progress, the PLC code form, success; from each kind of
 * source (v1, the current draft, a plain PDS).
 */
describe('/migrate in Chromium', () => {
  let pair: ReferencePdsPair
  let erin: SeededAccount
  let browser: Browser
  let page: Page
  let step = 0
  /** What a test started and must stop, whatever its outcome. */
  const closers: (() => Promise<void>)[] = []
  /** Accessibility problems axe-core found on our pages (the source's own pages are not ours). */
  const violations: string[] = []
  /** axe-core's checks on a page of ours (the source's own pages are not ours). */
  const audit = async (p: Page, name: string) => {
    if (new URL(p.url()).origin !== pair.b.url) return
    const run = async () => {
      await p.addScriptTag({ path: AXE })
      return (await p.evaluate(async () => {
        const axe = (globalThis as unknown as { axe: { run(): Promise<{ violations: unknown[] }> } }).axe
        return (await axe.run()).violations
      })) as { id: string; impact: string; nodes: { target: string[] }[] }[]
    }
    // A progress page reloads itself when its stage changes: audit the page it became.
    const found = await run().catch(async (err: Error) => {
      if (!err.message.includes('Execution context was destroyed')) throw err
      await p.waitForLoadState()
      return run()
    })
    for (const v of found)
      violations.push(
        `${name}: ${v.id} (${v.impact}) at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`,
      )
  }
  /** A numbered screenshot of `p` (the main page by default), then its audit. */
  const shot = async (name: string, p: Page = page) => {
    step++
    await p.screenshot({
      path: join(SHOTS, `${String(step).padStart(2, '0')}-${name}.png`),
      fullPage: true,
    })
    await audit(p, name)
  }

  /** From the checklist: the source's own sign-in and consent pages, as the user goes through them. */
  const signInAtSource = async (sourceUrl: string, password: string, shotPrefix: string) => {
    await page.click('form[action="/migrate/authorize"] button')
    await page.waitForURL((url) => url.origin === sourceUrl)
    await page.waitForLoadState('networkidle')
    await shot(`${shotPrefix}source-sign-in`)
    await page.fill('input[autocomplete="current-password"]', password)
    await page.click('button[type=submit]')
    const authorize = page.getByRole('button', { name: 'Authorize' })
    await authorize.waitFor()
    await shot(`${shotPrefix}source-consent`)
    await authorize.click()
  }

  /** Another browser (a new device, or after the tab and cookies are gone): signs in at the source from the checklist. */
  const signInElsewhere = async (identifier: string, sourceUrl: string, password: string) => {
    const context = await browser.newContext()
    const other = await context.newPage()
    await other.goto(`${pair.b.url}/migrate`)
    await other.fill('#identifier', identifier)
    await other.click('button[type=submit]')
    await other.waitForURL(/\/migrate\/check/)
    await other.click('form[action="/migrate/authorize"] button')
    await other.waitForURL((url) => url.origin === sourceUrl)
    await other.fill('input[autocomplete="current-password"]', password)
    await other.click('button[type=submit]')
    await other.getByRole('button', { name: 'Authorize' }).waitFor()
    return { context, other }
  }

  beforeAll(async () => {
    await mkdir(SHOTS, { recursive: true })
    // This run's screenshots only: step numbers shift when steps are added.
    for (const name of await readdir(SHOTS))
      if (/^(\d\d|mobile|draft|plain)-.*\.png$/.test(name)) await rm(join(SHOTS, name))
    pair = await startReferencePdsPair({ limits: { retry: { attempts: 3, baseDelayMs: 20 } } })
    erin = await seedReferenceAccount(pair.a.url, {
      handle: 'erin.test',
      email: 'erin@example.com',
      password: 'erin-password-1',
      posts: 120,
      images: 4,
      follows: 5,
    })
    browser = await launchChromium()
    page = await browser.newPage()
  }, 120_000)
  afterAll(async () => {
    await browser?.close()
    await pair?.close()
  })

  it('clicks through the whole move', async () => {
    // A's disk has lost one of her images (its database still lists it).
    const lostCid = [...erin.blobs.keys()][1] as string
    const blobstore = pair.a.pds.ctx.blobstore(erin.did) as unknown as { getStoredPath(cid: CID): string }
    const lostPath = blobstore.getStoredPath(CID.parse(lostCid))
    await rename(lostPath, `${lostPath}.lost`)
    await page.goto(`${pair.b.url}/migrate`)
    await shot('start')
    // Item 6: a handle nobody has is refused at the field, and what she typed stays.
    await page.fill('#identifier', 'nobody.test')
    await page.click('button[type=submit]')
    await page.waitForSelector('#identifier-error')
    expect(await page.inputValue('#identifier')).toBe('nobody.test')
    expect(await page.getAttribute('#identifier', 'aria-invalid')).toBe('true')
    expect(await page.evaluate('document.activeElement?.id')).toBe('identifier')
    await shot('start-unknown-handle')
    await page.fill('#identifier', erin.handle)
    await page.click('button[type=submit]')
    await page.waitForURL(/\/migrate\/check/)
    await expect(page.textContent('body')).resolves.toContain('Checklist')
    // Item 7: the size before the move, from what A serves to anyone: her 4 images, the lost one
    // named as one A cannot send, the repository as "plus", and a time at a stated rate.
    const sizeLine = (await page.textContent('li:has-text("Size:")')) as string
    expect(sizeLine).toMatch(
      /^Size: 4 images and files \(\d+ KiB\), plus your posts, likes, follows and settings\./,
    )
    expect(sizeLine).toContain('Copying takes less than a minute at 10.0 MiB/s')
    expect(sizeLine).toContain('Your current server could not send 1 of them just now')
    await shot('checklist')
    // The backup the checklist offers: one zip with a name she recognises, its README naming the image A lost.
    const [backup] = await Promise.all([
      page.waitForEvent('download'),
      page.click('a[href^="/migrate/backup"]'),
    ])
    expect(backup.suggestedFilename()).toBe(`${erin.handle}-${new Date().toISOString().slice(0, 10)}.zip`)
    const saved = await unzip(await readFile((await backup.path()) as string))
    expect([...saved.keys()].filter((n) => n.startsWith('blobs/'))).toHaveLength(erin.blobs.size - 1)
    expect(saved.get('README.txt')?.toString()).toContain(
      `NOT INCLUDED: 1 file(s) your server could not send:\n  ${lostCid}`,
    )

    await signInAtSource(pair.a.url, erin.password, '')

    // Back at B, on our public origin, following the transfer until it needs the PLC code.
    await page.waitForURL((url) => url.origin === pair.b.url && url.pathname.startsWith('/migrate/transfer/'))
    await shot('progress')
    const transferPage = page.url()
    await page.waitForSelector('input[name="token"]', { timeout: 60_000 })
    // The copy finished anyway; the page names the post that would lose its image, and why.
    await expect(page.textContent('main')).resolves.toContain('1 image or file could not be copied')
    await expect(page.textContent('main')).resolves.toContain('the fault is there, not here')
    await expect(page.textContent('main ul')).resolves.toMatch(/“.+”/)
    await shot('missing-image')
    // Item 2: she comes back from another browser and signs in again: the same move, not a second one.
    const elsewhere = await signInElsewhere(erin.handle, pair.a.url, erin.password)
    await elsewhere.other.getByRole('button', { name: 'Authorize' }).click()
    await elsewhere.other.waitForURL((url) => url.href === transferPage)
    await shot('signed-in-again-same-move', elsewhere.other)
    await elsewhere.context.close()
    expect((await pair.b.engine.unfinished(erin.did))?.transferId).toBe(
      new URL(transferPage).pathname.split('/').at(-1),
    )
    // A's operator restores the file; "Try those again" fetches it, and the warning is gone.
    await rename(`${lostPath}.lost`, lostPath)
    await page.click('form[action$="/retry-missing"] button')
    await page.waitForSelector('text=Every image and file is here now.')
    await expect(page.textContent('main')).resolves.not.toContain('could not be copied')
    await shot('plc-code-form')
    // A mistyped code first: refused, and still explained to a user who comes back later.
    await page.fill('input[name="token"]', 'AAAAA-BBBBB')
    await page.click('form[action$="/complete"] button[type=submit]')
    await page.waitForSelector('[role=alert]')
    await expect(page.textContent('[role=alert]')).resolves.toContain('was not accepted')
    await shot('wrong-code')
    await page.goto(transferPage)
    await expect(page.textContent('[role=alert]')).resolves.toContain(
      'Your last attempt to finish the move did not complete (SourceRefused): your current server did not accept the code (wrong or expired).',
    )
    await shot('came-back-after-wrong-code')
    // Item 4: a private key pasted where the public one goes is refused plainly, at the field.
    await page.fill('input[name="token"]', 'AAAAA-BBBBB')
    await page.fill('#rotationKey', 'a'.repeat(64))
    await page.click('form[action$="/complete"] button[type=submit]')
    await page.waitForSelector('#rotationKey-error')
    await expect(page.textContent('#rotationKey-error')).resolves.toContain('This looks like a private key')
    expect(await page.inputValue('input[name="token"]')).toBe('AAAAA-BBBBB')
    expect(await page.inputValue('#rotationKey')).toBe('')
    await shot('private-key-refused')
    const token = pair.plcTokens.get(erin.did)?.at(-1) as string
    await page.fill('input[name="token"]', token)
    // She holds no rotation key yet (the section opens itself): she makes one here and saves it.
    await expect(page.getAttribute('details#rotation-key', 'open')).resolves.not.toBeNull()
    await page.click('#keygen-make')
    await page.waitForSelector('#keygen-file[href^="blob:"]')
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#keygen-file')])
    const keyFile = JSON.parse(await readFile((await download.path()) as string, 'utf8')) as {
      account: string
      publicKey: string
      privateKeyHex: string
    }
    expect(keyFile.account).toBe(erin.did)
    // The private key in the file is the public key's: @atproto/crypto reads it back to the same did:key.
    expect((await P256Keypair.import(keyFile.privateKeyHex)).did()).toBe(keyFile.publicKey)
    expect(await page.inputValue('#rotationKey')).toBe('')
    await page.check('#keygen-confirm')
    expect(await page.inputValue('#rotationKey')).toBe(keyFile.publicKey)
    await shot('rotation-key-made')
    // Passwords do not move (D24): she chooses the one she will sign in with here.
    await page.fill('#password', 'erin-new-password')
    await page.fill('#password2', 'erin-new-password')
    await shot('code-and-password')
    await page.click('form[action$="/complete"] button[type=submit]')
    await page.waitForSelector('h1:has-text("Moved")', { timeout: 60_000 })
    await shot('moved')
    await expect(page.textContent('ol')).resolves.toContain('✓ Done')

    const transferId = new URL(transferPage).pathname.split('/').at(-1) as string
    expect((await pair.b.engine.get(transferId))?.status).toBe('completed')
    const onA = await fetch(`${pair.a.url}/xrpc/com.atproto.sync.getRepo?did=${erin.did}`)
    expect(onA.status).toBe(400)
    // Her key comes first in the identity, and the result page lists it.
    const plcData = (await (await fetch(`${pair.plc.url}/${erin.did}/data`)).json()) as {
      rotationKeys: string[]
    }
    expect(plcData.rotationKeys[0]).toBe(keyFile.publicKey)
    await expect(page.textContent('main')).resolves.toContain(keyFile.publicKey)
    // And she signs in at B with it, as her apps will.
    await expect(page.textContent('main')).resolves.toContain('the password you chose')
    const session = await fetch(`${pair.b.url}/xrpc/com.atproto.server.createSession`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ identifier: erin.handle, password: 'erin-new-password' }),
    })
    expect(session.status).toBe(200)
    expect(((await session.json()) as { active?: boolean }).active).toBe(true)
    // Item 8: a pasted profile URL is understood, and an account already here is told so.
    await page.goto(`${pair.b.url}/migrate`)
    await page.fill('#identifier', `https://bsky.app/profile/${erin.handle}`)
    await page.click('button[type=submit]')
    await page.waitForSelector('h1:has-text("Already here")')
    await expect(page.textContent('main')).resolves.toContain('already lives on this server')
    expect(await page.getAttribute('a:has-text("See who can change your identity")', 'href')).toBe(
      `/keys/list?identifier=${encodeURIComponent(erin.did)}`,
    )
    await shot('already-here')
    // Every page of ours passes axe-core's checks.
    expect(violations).toEqual([])
  }, 180_000)

  it('works on a 390x844 screen, keyboard only, with JavaScript off', async () => {
    const frank = await seedReferenceAccount(pair.a.url, {
      handle: 'frank.test',
      email: 'frank@example.com',
      password: 'frank-password-1',
      posts: 30,
      images: 2,
      follows: 2,
    })
    const context = await browser.newContext({
      viewport: { width: 390, height: 844 },
      javaScriptEnabled: false,
    })
    const small = await context.newPage()
    const fits = async () =>
      expect(Number(await small.evaluate('document.documentElement.scrollWidth'))).toBeLessThanOrEqual(390)
    const mobileShot = (name: string) =>
      small.screenshot({ path: join(SHOTS, `mobile-${name}.png`), fullPage: true })
    try {
      await small.goto(`${pair.b.url}/migrate`)
      await fits()
      // Keyboard only: the handle field, then Enter.
      await small.keyboard.press('Tab')
      await small.keyboard.type(frank.handle)
      await small.keyboard.press('Enter')
      await small.waitForURL(/\/migrate\/check/)
      await fits()
      await mobileShot('checklist')
      // The source's sign-in page is its own (a script app); sign in there headlessly, as the
      // user would have, and continue on our pages without scripts.
      const authorize = await fetch(`${pair.b.url}/migrate/authorize`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded', origin: pair.b.url },
        body: new URLSearchParams({ did: frank.did }),
      })
      const callback = await headlessAuthorize(new URL(authorize.headers.get('location') as string), {
        username: frank.handle,
        password: frank.password,
      })
      await small.goto(callback.toString())
      // Without scripts the page refreshes itself until the code is asked for.
      await small.waitForSelector('input[name="token"]', { timeout: 60_000 })
      await fits()
      await mobileShot('code-form')
      const token = pair.plcTokens.get(frank.did)?.at(-1) as string
      await small.focus('#token')
      await small.keyboard.type(token)
      // Tab through the form to its button, as a keyboard user does.
      for (let i = 0; i < 30; i++) {
        const focused = String(await small.evaluate("document.activeElement?.textContent ?? ''"))
        if (focused.includes('Move my account')) break
        await small.keyboard.press('Tab')
      }
      await small.keyboard.press('Enter')
      await small.waitForSelector('h1:has-text("Moved")', { timeout: 60_000 })
      await fits()
      await mobileShot('moved')
      // He added no key of his own: only B's key is left, and the page says so and leads to /keys,
      // where his keys are listed with the way to make one.
      await expect(small.textContent('main')).resolves.toContain(
        'Only this server can change your identity now',
      )
      await expect(small.textContent('main')).resolves.toContain(
        'For 72 hours after any change to your identity',
      )
      await small.click('text=Make a rotation key of your own')
      await small.waitForURL((url) => url.pathname === '/keys/list')
      await expect(small.textContent('main')).resolves.toContain(frank.did)
      // His own move is named as such, not as a change to be alarmed by.
      await expect(small.textContent('main')).resolves.toContain(
        'Your account moved to this server in the last 72 hours',
      )
      await expect(small.textContent('main')).resolves.not.toContain('Not you?')
      await fits()
      await mobileShot('moved-then-keys')
    } finally {
      await context.close()
    }
  }, 120_000)

  it('moves an account from a plain PDS (nothing of ours installed) through the same pages', async () => {
    const plain = await startPlainPds(pair.plc.namedUrl)
    try {
      const gina = await seedReferenceAccount(plain.url, {
        handle: 'gina.test',
        email: 'gina@example.com',
        password: 'gina-password-1',
        posts: 40,
        images: 2,
        follows: 3,
      })
      await page.goto(`${pair.b.url}/migrate`)
      // Her handle is known only to her own server: she gives her DID.
      await page.fill('#identifier', gina.did)
      await page.click('button[type=submit]')
      await page.waitForURL(/\/migrate\/check/)
      // The checklist says what kind of source it is, and what does not move from it.
      await expect(page.textContent('main')).resolves.toContain('has no direct-transfer support')
      await expect(page.textContent('main')).resolves.toContain('Invite codes and other private settings')
      await shot('plain-checklist')
      // She has a backup of her account (our backup service): the posts and images come from it.
      const work = await mkdtemp(join(tmpdir(), 'migrate-browser-backup-'))
      const backup = await servedBackup({ did: gina.did, plcUrl: pair.plc.url, workDir: work })
      const backupUrl = backup.url
      closers.push(async () => {
        await backup.close()
        await rm(work, { recursive: true, force: true })
      })
      await page.click('#from-backup summary')
      await page.fill('#copy', backupUrl)
      await page.fill('#copyToken', 'not-the-token')
      await shot('plain-from-backup')
      await page.click('form[action="/migrate/authorize"] button')
      await page.waitForSelector('h1:has-text("Your backup could not be used")')
      await expect(page.textContent('main')).resolves.toContain('refused the access token')
      await shot('plain-backup-refused')
      await page.click('text=Back to the checklist')
      await page.click('#from-backup summary')
      await page.fill('#copy', backupUrl)
      await page.fill('#copyToken', backup.token)
      await signInAtSource(plain.url, gina.password, 'plain-')
      await page.waitForURL(
        (url) => url.origin === pair.b.url && url.pathname.startsWith('/migrate/transfer/'),
      )
      const transferPage = page.url()
      await page.waitForSelector('input[name="token"]', { timeout: 60_000 })
      await expect(page.textContent('main')).resolves.toContain(`your backup at ${backupUrl}`)
      await shot('plain-code-form')
      // The code her own server emailed once her data had moved (asked for just after the stage
      // that shows this form is recorded).
      const transferId = new URL(transferPage).pathname.split('/').at(-1) as string
      await expect.poll(async () => (await pair.b.engine.get(transferId))?.plcCodeRequestedAt).toBeDefined()
      const token = (await plain.plcToken(gina.did)) as string
      await page.fill('input[name="token"]', token)
      await page.fill('#password', 'gina-new-password')
      await page.fill('#password2', 'gina-new-password')
      await page.click('form[action$="/complete"] button[type=submit]')
      await page.waitForSelector('h1:has-text("Moved")', { timeout: 60_000 })
      await expect(page.textContent('main')).resolves.toContain(
        'Your account at your old server is deactivated',
      )
      await shot('plain-moved')
      expect(await pair.b.engine.get(transferId)).toMatchObject({
        status: 'completed',
        dialect: 'plain',
        copyUrl: backupUrl,
      })
      const plcData = (await (await fetch(`${pair.plc.url}/${gina.did}/data`)).json()) as {
        services: { atproto_pds: { endpoint: string } }
      }
      expect(plcData.services.atproto_pds.endpoint).toBe(pair.b.url)
      const session = await fetch(`${pair.b.url}/xrpc/com.atproto.server.createSession`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ identifier: gina.did, password: 'gina-new-password' }),
      })
      expect(
        session.status,
        `${JSON.stringify(await pair.b.engine.get(transferId))} ${await session.clone().text()}`,
      ).toBe(200)
      expect(violations).toEqual([])
    } finally {
      for (const close of closers.splice(0)) await close()
      await plain.close()
    }
  }, 120_000)
  it('moves an account from a source serving only the current draft through the same pages', async () => {
    const draft = await startDraftPds(pair.plc.namedUrl)
    try {
      const hana = await seedReferenceAccount(draft.url, {
        handle: 'hana.test',
        email: 'hana@example.com',
        password: 'hana-password-1',
        posts: 40,
        images: 2,
        follows: 3,
      })
      await page.goto(`${pair.b.url}/migrate`)
      await page.fill('#identifier', hana.did)
      await page.click('button[type=submit]')
      await page.waitForURL(/\/migrate\/check/)
      // The checklist says what kind of source it is, what moves, that her server emails a code;
      // no backup to read from (the engine reads a copy for a plain source only).
      const checklist = (await page.textContent('main')) as string
      expect(checklist).toContain('supports the draft version of direct transfer')
      expect(checklist).toContain('invite codes')
      expect(checklist).toContain('Your app settings are copied only if your current server offers them')
      expect(checklist).toContain('your current server emails you a code')
      expect(checklist).toContain(
        'your current server signs the identity change and deactivates your account',
      )
      expect(await page.locator('#from-backup').count()).toBe(0)
      await shot('draft-checklist')
      // The same checklist on a 390 px screen without scripts: nothing wider than the screen.
      const small = await browser.newContext({
        viewport: { width: 390, height: 844 },
        javaScriptEnabled: false,
      })
      try {
        const phone = await small.newPage()
        await phone.goto(page.url())
        expect(Number(await phone.evaluate('document.documentElement.scrollWidth'))).toBeLessThanOrEqual(390)
        await phone.screenshot({ path: join(SHOTS, 'mobile-draft-checklist.png'), fullPage: true })
      } finally {
        await small.close()
      }

      // Item 5: declining at her server is said plainly, with the way on (not "Something went wrong").
      const declining = await signInElsewhere(hana.did, draft.url, hana.password)
      await declining.other.getByRole('button', { name: 'Deny access' }).click()
      await declining.other.waitForURL(`${pair.b.url}/migrate/declined`)
      const declined = (await declining.other.textContent('main')) as string
      expect(declined).toContain('You declined the authorization at your current server')
      expect(declined).not.toContain('Something went wrong')
      await shot('draft-declined', declining.other)
      await declining.context.close()
      expect(await pair.b.engine.unfinished(hana.did)).toBeUndefined()

      await signInAtSource(draft.url, hana.password, 'draft-')
      await page.waitForURL(
        (url) => url.origin === pair.b.url && url.pathname.startsWith('/migrate/transfer/'),
      )
      const transferPage = page.url()
      const transferId = new URL(transferPage).pathname.split('/').at(-1) as string
      await page.waitForSelector('input[name="token"]', { timeout: 60_000 })
      // What her server handed over, by the capabilities both sides agreed on.
      const held = await pair.b.engine.get(transferId)
      expect(held).toMatchObject({ dialect: 'draft', stage: 'awaitingPlcToken' })
      await expect(page.textContent('main')).resolves.toContain(
        held?.capabilities?.includes('preferences')
          ? 'and your app settings'
          : 'does not offer your app settings',
      )
      await shot('draft-code-form')
      // The code her own server emailed once her data had moved (asked for just after the stage
      // that shows this form is recorded).
      await expect.poll(async () => (await pair.b.engine.get(transferId))?.plcCodeRequestedAt).toBeDefined()
      const token = (await draft.plcToken(hana.did)) as string
      await page.fill('input[name="token"]', token)
      await page.fill('#password', 'hana-new-password')
      await page.fill('#password2', 'hana-new-password')
      await page.click('form[action$="/complete"] button[type=submit]')
      await page.waitForSelector('h1:has-text("Moved")', { timeout: 60_000 })
      await expect(page.textContent('main')).resolves.toContain(
        'Your account at your old server is deactivated',
      )
      await shot('draft-moved')
      expect(await pair.b.engine.get(transferId)).toMatchObject({ status: 'completed', dialect: 'draft' })
      const plcData = (await (await fetch(`${pair.plc.url}/${hana.did}/data`)).json()) as {
        services: { atproto_pds: { endpoint: string } }
      }
      expect(plcData.services.atproto_pds.endpoint).toBe(pair.b.url)
      const onDraft = await fetch(`${draft.url}/xrpc/com.atproto.sync.getRepo?did=${hana.did}`)
      expect(((await onDraft.json()) as { error?: string }).error).toBe('RepoDeactivated')
      // She signs in at B with the password she chose, as her apps will.
      const session = await fetch(`${pair.b.url}/xrpc/com.atproto.server.createSession`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ identifier: hana.did, password: 'hana-new-password' }),
      })
      expect(session.status).toBe(200)
      const signedIn = (await session.json()) as { active?: boolean; email?: string }
      expect(signedIn).toMatchObject({ active: true, email: 'hana@example.com' })
      expect(violations).toEqual([])
    } finally {
      await draft.close()
    }
  }, 120_000)
})
