import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startTransferPds, type TransferPds } from '@pds-transfer/atproto-pds'
import { CLIENT_METADATA_PATH } from '@pds-transfer/destination'
import type { Browser, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { launchChromium } from '../src/harness/chromium.ts'
import { freePort } from '../src/harness/destination-server.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { startTlsFront, type TlsFront } from '../src/harness/tls-front.ts'

const SHOTS = join(import.meta.dirname, '..', '..', 'test-artifacts', 'migrate-browser')
const NO_APPVIEW = { bskyAppViewUrl: 'http://127.0.0.1:9', bskyAppViewDid: 'did:web:appview.invalid' }
/** The destination's public name (`.internal`: reserved for private use, and not refused by the OAuth libraries). */
const NAME = 'b.pds-transfer.internal'

/**
 * Issue 18, item 9: the source's consent screen says who asks. B is served as a deployment
 * serves it (https://b.pds-transfer.internal through a TLS proxy), so it is a public OAuth client
 * whose metadata the source's own provider (@atproto/oauth-provider 0.22, the reference PDS's)
 * fetches. What that screen shows was read in @atproto/oauth-provider-ui and is checked here in
 * Chromium: a source that does not list B as trusted names it by its host, one that does shows
 * its name and logo; both link its terms and privacy policy.
 */
describe('the consent screen at the source, for a destination served as deployed', () => {
  let plc: PlcDirectory
  let front: TlsFront
  let b: TransferPds
  let browser: Browser
  let page: Page
  const closers: (() => Promise<void>)[] = []
  const clientId = `https://${NAME}${CLIENT_METADATA_PATH}`
  const client = {
    name: 'Example PDS: move your account here',
    tosUri: `https://${NAME}/terms`,
    policyUri: `https://${NAME}/privacy`,
  }

  beforeAll(async () => {
    await mkdir(SHOTS, { recursive: true })
    plc = await startPlcDirectory()
    closers.push(() => plc.close())
    const port = await freePort()
    front = await startTlsFront(NAME, `http://127.0.0.1:${port}`)
    closers.push(() => front.close())
    const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-consent-'))
    b = await startTransferPds({
      dataDir: join(dir, 'b'),
      port,
      plcUrl: plc.namedUrl,
      env: NO_APPVIEW,
      pagesUrl: front.url,
      oauthClient: client,
    })
    closers.push(async () => {
      await b.close()
      await rm(dir, { recursive: true, force: true })
    })
    browser = await launchChromium(front.chromiumArgs)
    closers.push(() => browser.close())
    page = await browser.newPage()
  }, 120_000)
  afterAll(async () => {
    for (const close of closers.reverse()) await close().catch(() => undefined)
  })

  /** Through B's checklist to the source's consent screen; returns its text. */
  const toConsent = async (did: string, sourceUrl: string, password: string, shot: string) => {
    await page.goto(`${front.url}/migrate`)
    await page.fill('#identifier', did)
    await page.click('button[type=submit]')
    await page.waitForURL(/\/migrate\/check/)
    await page.click('form[action="/migrate/authorize"] button')
    await page
      .waitForURL((url) => url.origin === sourceUrl, { timeout: 15_000 })
      .catch(async (err: Error) => {
        throw new Error(`${err.message}; at ${page.url()}: ${await page.textContent('body')}`)
      })
    await page.fill('input[autocomplete="current-password"]', password)
    await page.click('button[type=submit]')
    const authorize = page.getByRole('button', { name: 'Authorize' })
    await authorize.waitFor()
    await page.waitForLoadState('networkidle')
    await page.screenshot({ path: join(SHOTS, `consent-${shot}.png`), fullPage: true })
    return { text: (await page.textContent('body')) as string, authorize }
  }

  it('names B by its host at a source that does not trust it, links its terms, and the move starts', async () => {
    const a = await startPlainPds(plc.namedUrl)
    closers.push(() => a.close())
    const ivy = await seedReferenceAccount(a.url, {
      handle: 'ivy.test',
      email: 'ivy@example.com',
      password: 'ivy-password-1',
      posts: 5,
      images: 1,
      follows: 1,
    })
    // What a source fetches by client_id: the metadata B serves through its https address.
    const served = (await (await fetch(clientId)).json()) as Record<string, unknown>
    expect(served).toMatchObject({
      client_id: clientId,
      client_name: client.name,
      client_uri: front.url,
      logo_uri: `${front.url}/oauth-client-logo.svg`,
      tos_uri: client.tosUri,
      policy_uri: client.policyUri,
    })
    expect((await fetch(served.logo_uri as string)).headers.get('content-type')).toBe('image/svg+xml')

    const consent = await toConsent(ivy.did, a.url, ivy.password, 'untrusted-source')
    expect(consent.text).not.toContain('An application on your device')
    expect(consent.text).toContain(NAME)
    // The full client_id URL is shown only for a non-conventional path.
    expect(consent.text).not.toContain(CLIENT_METADATA_PATH)
    expect(await page.locator(`a[href="${client.tosUri}"]`).count()).toBe(1)
    expect(await page.locator(`a[href="${client.policyUri}"]`).count()).toBe(1)
    await consent.authorize.click()
    // Back at B on its https address, following the move.
    await page.waitForURL((url) => url.origin === front.url && url.pathname.startsWith('/migrate/transfer/'))
    const transferId = new URL(page.url()).pathname.split('/').at(-1) as string
    expect(await b.engine.get(transferId)).toMatchObject({ did: ivy.did, dialect: 'plain' })
    await page.screenshot({ path: join(SHOTS, 'consent-untrusted-then-progress.png'), fullPage: true })
  }, 120_000)

  it("shows B's name and logo at a source whose operator lists it as trusted", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-consent-a-'))
    const a = await startTransferPds({
      dataDir: dir,
      port: await freePort(),
      plcUrl: plc.namedUrl,
      env: { ...NO_APPVIEW, trustedOAuthClients: [clientId] },
    })
    closers.push(async () => {
      await a.close()
      await rm(dir, { recursive: true, force: true })
    })
    const jo = await seedReferenceAccount(a.url, {
      handle: 'joan.test',
      email: 'joan@example.com',
      password: 'joan-password-1',
      posts: 5,
      images: 1,
      follows: 1,
    })
    const consent = await toConsent(jo.did, a.url, jo.password, 'trusted-source')
    expect(consent.text).toContain(client.name)
    expect(await page.locator(`img[src="${front.url}/oauth-client-logo.svg"]`).count()).toBeGreaterThan(0)
    expect(await page.locator(`a[href="${client.tosUri}"]`).count()).toBe(1)
  }, 120_000)
})
