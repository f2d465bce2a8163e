import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AtpAgent } from '@atproto/api'
import { runBackupCli } from '@pds-transfer/backup'
import type { Browser, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { launchChromium } from '../src/harness/chromium.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'

const SHOTS = join(import.meta.dirname, '..', '..', 'test-artifacts', 'backup-status')
const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js')
const TOKEN = 'status-page-operator-token'

/**
 * Issue 20's status page, as an operator sees it in Chromium: `pds-backup serve` backing up an
 * account on a plain PDS that has lost one image file; the page shows the run, the missing blob,
 * and that the PDS has moved on after a new post. Screenshots in test-artifacts/backup-status.
 */
describe('the backup status page in Chromium', () => {
  let plc: PlcDirectory
  let pds: Awaited<ReturnType<typeof startPlainPds>>
  let dataDir: string
  let work: string
  let alice: SeededAccount
  let browser: Browser

  beforeAll(async () => {
    plc = await startPlcDirectory()
    dataDir = await mkdtemp(join(tmpdir(), 'backup-status-pds-'))
    work = await mkdtemp(join(tmpdir(), 'backup-status-'))
    pds = await startPlainPds(plc.namedUrl, { dataDir })
    alice = await seedReferenceAccount(pds.url, {
      handle: 'statuspage.test',
      email: 'statuspage@example.com',
      password: 'status-page-password',
      posts: 20,
      images: 3,
      follows: 2,
    })
    // The PDS's disk lost one image: it answers BlobNotFound for it from now on.
    const lost = [...alice.blobs.keys()][0] as string
    await rm(join(dataDir, 'blobs', alice.did, lost))
    browser = await launchChromium()
    await mkdir(SHOTS, { recursive: true })
  }, 180_000)
  afterAll(async () => {
    await browser?.close()
    await pds?.close()
    await plc?.close()
    for (const dir of [dataDir, work]) if (dir) await rm(dir, { recursive: true, force: true })
  })

  async function violations(page: Page): Promise<string[]> {
    await page.addScriptTag({ path: AXE })
    const found = (await page.evaluate('axe.run().then((r) => r.violations)')) as {
      id: string
      nodes: { target: string[] }[]
    }[]
    return found.map((v) => `${v.id} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)
  }

  it('shows the backup, the missing image, and that the PDS has moved on', async () => {
    const key = join(work, 'key.json')
    const common = ['--plc', plc.url, '--work', work]
    expect(await runBackupCli(['keygen', '--out', key, ...common], { out: () => {}, err: () => {} })).toBe(0)
    process.env.PDS_BACKUP_OPERATOR_TOKEN = TOKEN
    const stop = new AbortController()
    const out: string[] = []
    let url = ''
    const listening = new Promise<void>((resolve) => {
      void runBackupCli(
        [
          'serve',
          '--archive',
          join(work, 'archive'),
          '--key',
          key,
          '--port',
          '0',
          '--account',
          alice.did,
          '--every',
          '24',
          ...common,
        ],
        { out: (t) => out.push(t), err: () => {} },
        {
          signal: stop.signal,
          onListening: (u) => {
            url = u
            resolve()
          },
        },
      )
    })
    try {
      await listening
      // Without the operator's credentials: a page that says how to sign in, 401.
      const anonymous = await fetch(`${url}/`)
      expect(anonymous.status).toBe(401)
      expect(anonymous.headers.get('www-authenticate')).toMatch(/^Basic /)

      const context = await browser.newContext({ httpCredentials: { username: 'operator', password: TOKEN } })
      const page = await context.newPage()
      await expect
        .poll(
          async () => {
            await page.goto(`${url}/`)
            return page.textContent('main')
          },
          { timeout: 30_000, interval: 200 },
        )
        .toMatch(/1 missing at the PDS/)
      const text = (await page.textContent('main')) ?? ''
      expect(text).toMatch(/1 account, .* stored; next run /)
      expect(text).toMatch(/up to date with the PDS/)
      expect(text).toMatch(/2 held, 1 missing at the PDS/)
      await page.click('summary:has-text("Missing blobs")')
      expect(await page.textContent('details')).toMatch(/the source has no such blob/)
      await page.screenshot({ path: join(SHOTS, '01-status.png'), fullPage: true })
      expect(await violations(page)).toEqual([])

      // The account posts: the page says the PDS is ahead of the backup.
      const agent = new AtpAgent({ service: pds.url })
      await agent.login({ identifier: alice.handle, password: alice.password })
      await agent.post({ text: 'after the backup', createdAt: new Date().toISOString() })
      await page.reload()
      expect(await page.textContent('main')).toMatch(/newer than the backup/)
      expect(await page.textContent('main')).toMatch(/1 account has changed at the PDS since the last backup/)
      await page.click('summary:has-text("History")')
      await page.screenshot({ path: join(SHOTS, '02-status-behind.png'), fullPage: true })
      await page.setViewportSize({ width: 390, height: 844 })
      await page.screenshot({ path: join(SHOTS, '03-status-mobile.png'), fullPage: true })
      expect(await violations(page)).toEqual([])
      await context.close()
      expect(out.join('\n')).toMatch(
        /1 blob\(s\) the PDS could not serve, recorded and asked for again next run/,
      )
    } finally {
      stop.abort()
      delete process.env.PDS_BACKUP_OPERATOR_TOKEN
    }
  })
})
