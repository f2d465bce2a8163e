import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Browser } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { launchChromium } from '../src/harness/chromium.ts'
import { type ReferencePdsPair, startReferencePdsPair } from '../src/harness/reference-pds.ts'

const SHOTS = join(import.meta.dirname, '..', '..', 'test-artifacts', 'migrate-browser')
const MiB = 1024 * 1024
/** Issue 18's closing condition: a 300 MiB account. */
const IMAGES = 300

/**
 * Issue 18, "done when": a person moving a 300 MiB account closes the tab while it copies, comes
 * back later from another browser (no cookies), finds the same move, finishes it, and signs in
 * at the new server with the password chosen there. Between two reference PDSes, in Chromium.
 */
describe('/migrate with a 300 MiB account, the tab closed mid-copy', () => {
  let pair: ReferencePdsPair
  let gus: SeededAccount
  let browser: Browser

  beforeAll(async () => {
    await mkdir(SHOTS, { recursive: true })
    pair = await startReferencePdsPair()
    gus = await seedReferenceAccount(pair.a.url, {
      handle: 'gus.test',
      email: 'gus@example.com',
      password: 'gus-password-1',
      posts: 200,
      images: IMAGES,
      imageBytes: MiB,
      follows: 10,
    })
    browser = await launchChromium()
  }, 600_000)
  afterAll(async () => {
    await browser?.close()
    await pair?.close()
  })

  /** A fresh browser context (no cookies): /migrate, the handle, and A's sign-in and consent. */
  async function signIn() {
    const context = await browser.newContext()
    const page = await context.newPage()
    await page.goto(`${pair.b.url}/migrate`)
    await page.fill('#identifier', gus.handle)
    await page.click('button[type=submit]')
    await page.waitForURL(/\/migrate\/check/)
    await page.click('form[action="/migrate/authorize"] button')
    await page.waitForURL((url) => url.origin === pair.a.url)
    await page.fill('input[autocomplete="current-password"]', gus.password)
    await page.click('button[type=submit]')
    await page.getByRole('button', { name: 'Authorize' }).click()
    await page.waitForURL((url) => url.origin === pair.b.url && url.pathname.startsWith('/migrate/transfer/'))
    return { context, page }
  }

  it('copies on with the tab closed, is found again, finishes, and the person signs in at B', async () => {
    const first = await signIn()
    const transferPage = first.page.url()
    const transferId = new URL(transferPage).pathname.split('/').at(-1) as string
    await expect(first.page.textContent('main')).resolves.toContain('You can close this page')
    // Some images are here, most are not: she closes the tab (and the whole browser session).
    for (;;) {
      const t = await pair.b.engine.get(transferId)
      const copied = (t?.progress.blobsReceived ?? 0) + (t?.progress.blobsReconciled ?? 0)
      if (copied >= 10) break
      if (t?.status === 'completed' || t?.status === 'failed')
        throw new Error(`the move ended before the tab was closed: ${t?.status}`)
      await new Promise((r) => setTimeout(r, 50))
    }
    // The page shows it too (it polls), before she closes it.
    await first.page.waitForSelector('dd[data-field="blobs"]:text-matches("^[1-9][0-9]* of 300")', {
      timeout: 60_000,
    })
    await first.page.screenshot({ path: join(SHOTS, 'large-progress-before-closing.png'), fullPage: true })
    await first.context.close()
    const whenClosed = await pair.b.engine.get(transferId)
    expect(whenClosed?.progress.blobsReceived ?? 0).toBeLessThan(IMAGES)

    // The copy goes on without any page open; she comes back from another browser.
    const again = await signIn()
    expect(again.page.url()).toBe(transferPage)
    await again.page.waitForSelector('input[name="token"]', { timeout: 300_000 })
    await expect(again.page.textContent('main')).resolves.toContain('Everything has been copied')
    await again.page.screenshot({ path: join(SHOTS, 'large-came-back-code-form.png'), fullPage: true })
    const token = pair.plcTokens.get(gus.did)?.at(-1) as string
    await again.page.fill('input[name="token"]', token)
    await again.page.fill('#password', 'gus-new-password')
    await again.page.fill('#password2', 'gus-new-password')
    await again.page.click('form[action$="/complete"] button[type=submit]')
    await again.page.waitForSelector('h1:has-text("Moved")', { timeout: 120_000 })
    await again.page.screenshot({ path: join(SHOTS, 'large-moved.png'), fullPage: true })
    await again.context.close()

    // One move, not two; every image at B, byte for byte by CID; she signs in and posts there.
    expect((await pair.b.engine.get(transferId))?.status).toBe('completed')
    const listed = new Set<string>()
    let cursor: string | undefined
    do {
      const res = await fetch(
        `${pair.b.url}/xrpc/com.atproto.sync.listBlobs?did=${gus.did}&limit=1000${cursor ? `&cursor=${cursor}` : ''}`,
      )
      const body = (await res.json()) as { cids: string[]; cursor?: string }
      for (const cid of body.cids) listed.add(cid)
      cursor = body.cids.length > 0 ? body.cursor : undefined
    } while (cursor)
    expect([...gus.blobs.keys()].filter((cid) => !listed.has(cid))).toEqual([])
    const sample = [...gus.blobs.entries()].slice(-3)
    for (const [cid, bytes] of sample) {
      const res = await fetch(`${pair.b.url}/xrpc/com.atproto.sync.getBlob?did=${gus.did}&cid=${cid}`)
      expect(Buffer.from(await res.arrayBuffer()).equals(Buffer.from(bytes))).toBe(true)
    }
    const session = await fetch(`${pair.b.url}/xrpc/com.atproto.server.createSession`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ identifier: gus.handle, password: 'gus-new-password' }),
    })
    expect(session.status).toBe(200)
    const { accessJwt } = (await session.json()) as { accessJwt: string }
    const post = await fetch(`${pair.b.url}/xrpc/com.atproto.repo.createRecord`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${accessJwt}` },
      body: JSON.stringify({
        repo: gus.did,
        collection: 'app.bsky.feed.post',
        record: {
          $type: 'app.bsky.feed.post',
          text: 'moved, tab closed and all',
          createdAt: new Date().toISOString(),
        },
      }),
    })
    expect(post.status).toBe(200)
  }, 900_000)
})
