import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { headlessAuthorize } from '../src/harness/headless-oauth.ts'
import { postForm } from '../src/harness/migrate-forms.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type ReferencePdsPair, startReferencePdsPair } from '../src/harness/reference-pds.ts'

/**
 * Mistakes a user can make in B's /migrate with real reference PDSes: each shows a clear
 * message, and neither PDS changes (the account stays active at A, and B holds at most a
 * deactivated copy that is never activated).
 */
describe('/migrate errors on reference PDSes', () => {
  let pair: ReferencePdsPair
  let carol: SeededAccount
  let plain: { url: string; close(): Promise<void> }

  const text = (html: string) => html.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ')
  const form = postForm
  const activeAt = async (pdsUrl: string, did: string) =>
    (await fetch(`${pdsUrl}/xrpc/com.atproto.sync.getLatestCommit?did=${did}`)).status === 200
  const signIn = async (did: string, consent: boolean) => {
    const authorize = await form(`${pair.b.url}/migrate/authorize`, { did })
    const url = new URL(authorize.headers.get('location') as string)
    return headlessAuthorize(url, { username: carol.handle, password: carol.password }, { consent })
  }

  beforeAll(async () => {
    pair = await startReferencePdsPair({ limits: { retry: { attempts: 3, baseDelayMs: 20 } } })
    carol = await seedReferenceAccount(pair.a.url, {
      handle: 'carol.test',
      email: 'carol@example.com',
      password: 'carol-password-1',
      posts: 30,
      images: 2,
      follows: 3,
    })
    plain = await startPlainPds(pair.plc.url)
  }, 120_000)
  afterAll(async () => {
    await plain?.close()
    await pair?.close()
  })

  it('an unknown handle', async () => {
    const res = await fetch(`${pair.b.url}/migrate/check?identifier=nobody.test`)
    expect(res.status).toBe(400)
    const body = text(await res.text())
    expect(body).toMatch(/Could not find an account for .{1,6}nobody\.test/)
  })

  it('a source without transfer support is offered the plain-PDS move, and nothing changes before sign-in', async () => {
    const dave = await seedReferenceAccount(plain.url, {
      handle: 'dave.test',
      email: 'dave@example.com',
      password: 'dave-password-1',
      posts: 1,
      images: 0,
      follows: 0,
    })
    const res = await fetch(`${pair.b.url}/migrate/check?identifier=${dave.did}`)
    expect(res.status).toBe(200)
    const body = text(await res.text())
    expect(body).toContain('has no direct-transfer support')
    expect(body).toContain('Sign in at')
    expect(await activeAt(plain.url, dave.did)).toBe(true)
  })

  it('a refused consent', async () => {
    const callback = await signIn(carol.did, false)
    expect(callback.searchParams.get('error')).toBe('access_denied')
    const declined = await fetch(callback, { redirect: 'manual' })
    // The person's choice, not a failure (issue 18, item 5): said as such, on our public origin.
    expect(declined.headers.get('location')).toBe(`${pair.b.url}/migrate/declined`)
    const res = await fetch(declined.headers.get('location') as string)
    expect(res.status).toBe(200)
    const body = text(await res.text())
    expect(body).toContain('You declined the authorization')
    expect(body).toContain('Nothing was moved')
    expect(body).not.toContain('Something went wrong')
    expect(await activeAt(pair.a.url, carol.did)).toBe(true)
    expect(await pair.b.pds.ctx.accountManager.getAccount(carol.did as `did:plc:${string}`)).toBeNull()
  })

  it('a wrong PLC code, then the right one', async () => {
    const started = await fetch(await signIn(carol.did, true), { redirect: 'manual' })
    const transferId = new URL(started.headers.get('location') as string).pathname.split('/').at(-1) as string
    let t = await pair.b.engine.get(transferId)
    for (let i = 0; i < 400 && t?.stage !== 'awaitingPlcToken' && t?.status !== 'failed'; i++) {
      await new Promise((r) => setTimeout(r, 50))
      t = await pair.b.engine.get(transferId)
    }
    expect(t?.stage).toBe('awaitingPlcToken')

    const wrong = await form(`${pair.b.url}/migrate/transfer/${transferId}/complete`, {
      token: 'AAAAA-BBBBB',
    })
    expect(wrong.status).toBe(400)
    expect(text(await wrong.text())).toContain('That code was not accepted')
    expect(await activeAt(pair.a.url, carol.did)).toBe(true)
    expect(await activeAt(pair.b.url, carol.did)).toBe(false)
    const plcData = (await (await fetch(`${pair.plc.url}/${carol.did}/data`)).json()) as {
      services: { atproto_pds: { endpoint: string } }
    }
    expect(plcData.services.atproto_pds.endpoint).toBe(pair.a.url)
    expect((await pair.b.engine.get(transferId))?.stage).toBe('awaitingPlcToken')

    const token = pair.plcTokens.get(carol.did)?.at(-1) as string
    const right = await form(`${pair.b.url}/migrate/transfer/${transferId}/complete`, { token })
    expect(right.status).toBe(303)
    expect((await pair.b.engine.get(transferId))?.status).toBe('completed')
    expect(await activeAt(pair.b.url, carol.did)).toBe(true)
  })
})
