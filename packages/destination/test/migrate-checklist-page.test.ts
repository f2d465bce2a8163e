import { describe, expect, it } from 'vitest'
import { type ChecklistInput, checklistPage } from '../src/migrate-checklist-page.ts'
import { transferPage } from '../src/migrate-transfer-page.ts'
import type { SourceDialect } from '../src/source-dialect.ts'
import { newTransfer } from '../src/transfer-admission.ts'

const DID = 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa'
const input = (dialect: SourceDialect, algorithm?: string): ChecklistInput => ({
  did: DID,
  identity: {
    did: DID,
    signingKey: 'did:key:zQ3s',
    pds: 'https://old.example',
    rotationKeys: ['did:key:zQ3r'],
  },
  source: 'https://old.example',
  origin: 'https://new.example',
  serviceDid: 'did:web:new.example',
  dialect,
  capabilities:
    dialect === 'v1'
      ? ({ did: 'did:web:old.example', version: 1, algorithms: algorithm ? [algorithm] : [] } as never)
      : undefined,
  algorithm,
})

/** The checklist and code step of /migrate for each kind of source (pure rendering). */
describe('/migrate checklist by kind of source', () => {
  it('tells a draft source apart: what moves, the code, who deactivates; no backup to read from', () => {
    const html = checklistPage(input('draft'))
    expect(html).toContain('supports the draft version of direct transfer')
    expect(html).toContain('your current server emails you a code')
    expect(html).toContain('Your app settings are copied only if your current server offers them')
    expect(html).toContain('your current server signs the identity change and deactivates your account there')
    expect(html).toContain('Passwords are not')
    expect(html).not.toContain('id="from-backup"')
    expect(html).not.toContain('no direct-transfer support')
    expect(html).toContain('action="/migrate/authorize"')
  })

  it('offers the backup to read from for a plain source only', () => {
    expect(checklistPage(input('plain'))).toContain('id="from-backup"')
    expect(checklistPage(input('plain'))).toContain('no direct-transfer support')
    expect(checklistPage(input('v1', 'HPKE-3'))).not.toContain('id="from-backup"')
    expect(checklistPage(input('v1', 'HPKE-3'))).toMatch(/encrypted\s+end to end/)
  })

  it('says the size when the current server listed the images, for every kind of source, and nothing without it', () => {
    const size = { blobs: 4, allListed: true, sized: 3, sizedBytes: 3 * 12_000, notServed: 1 }
    for (const html of [
      checklistPage({ ...input('plain'), size }),
      checklistPage({ ...input('draft'), size }),
      checklistPage({ ...input('v1', 'HPKE-3'), size }),
    ]) {
      expect(html).toContain(
        '<li>Size: 4 images and files (35 KiB), plus your posts, likes, follows and settings.',
      )
      expect(html).toContain('Your current server could not send 1 of them just now')
    }
    expect(checklistPage(input('plain'))).not.toContain('Size:')
  })

  it('offers no sign-in to a v1 source without an encryption method in common', () => {
    const html = checklistPage(input('v1'))
    expect(html).toContain('no encryption method in common')
    expect(html).not.toContain('action="/migrate/authorize"')
  })
})

describe('/migrate code step of a draft source', () => {
  const at = (capabilities: string[]) =>
    transferPage(
      {
        ...newTransfer(DID, 'https://old.example'),
        status: 'importing',
        stage: 'awaitingPlcToken',
        dialect: 'draft',
        capabilities,
      },
      { origin: 'https://new.example', host: 'new.example', canSetPassword: true },
      {},
    )

  it('says the code is being asked for until the source was asked, then that it was emailed', () => {
    expect(at(['base'])).toContain('is being asked to email you a confirmation code now')
    const asked = transferPage(
      {
        ...newTransfer(DID, 'https://old.example'),
        status: 'importing',
        stage: 'awaitingPlcToken',
        dialect: 'draft',
        capabilities: ['base'],
        plcCodeRequestedAt: Date.now(),
      },
      { origin: 'https://new.example', host: 'new.example', canSetPassword: true },
      {},
    )
    expect(asked).toContain('Your current server has emailed you a confirmation code.')
  })

  it('says whether the app settings came, by the capabilities both sides agreed on', () => {
    expect(at(['base', 'preferences'])).toContain('and your app settings.')
    expect(at(['base'])).toContain('does not offer your app settings, so they were not copied')
  })
})

describe('/migrate result page: who can change the identity', () => {
  const moved = (rotationKeys: string[]) => ({
    ...newTransfer(DID, 'https://old.example'),
    status: 'completed' as const,
    stage: 'activated' as const,
    passwordChosen: true,
    plcOperation: { rotationKeys },
  })
  const view = { origin: 'https://new.example', host: 'new.example', canSetPassword: true }

  it("leads to /keys when only this server's key is left, with the 72-hour undo explained", () => {
    const html = transferPage(moved(['did:key:zServer']), { ...view, keysPath: '/keys' }, {})
    expect(html).toContain('Only this server can change your identity now')
    expect(html).toContain('For 72 hours after any change to your identity')
    expect(html).toContain(
      `<a href="/keys/list?identifier=${encodeURIComponent(DID)}">Make a rotation key of your own</a>`,
    )
    // Without /keys served here, a tool that can.
    const without = transferPage(moved(['did:key:zServer']), view, {})
    expect(without).toContain('Only this server can change your identity now')
    expect(without).not.toContain('/keys/list')
    expect(without).toContain('goat key generate')
  })

  it("lists the person's key first and marks this server's", () => {
    const html = transferPage(moved(['did:key:zMine', 'did:key:zServer']), { ...view, keysPath: '/keys' }, {})
    expect(html).not.toContain('Only this server can change your identity now')
    expect(html).toContain(
      "<ol><li><code>did:key:zMine</code></li><li><code>did:key:zServer</code> (this server's key)</li></ol>",
    )
  })
})
