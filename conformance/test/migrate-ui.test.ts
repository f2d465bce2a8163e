import { Secp256k1Keypair } from '@atproto/crypto'
import * as plc from '@did-plc/lib'
import { NSID } from '@pds-transfer/core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { overrideSource } from '../src/harness/override-source.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import { TestSourceAuthorizer } from '../src/harness/test-authorizer.ts'

/**
 * The `/migrate` pages driven over HTTP as a browser without scripts would: checklist,
 * sign-in redirect, progress, the token form (a wrong code first), the result.
 */
describe('/migrate web UI', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let dest: DestinationServer
  let account: FixtureAccount
  let brokenDeactivation = false

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({
      plc: plcDir,
      // While set, the source fails inside completeTransfer (as a source mid-deploy would).
      wrapSource: (store) =>
        overrideSource(store, {
          async deactivate(did, options) {
            if (brokenDeactivation) throw new Error('database unavailable')
            return store.deactivate(did, options)
          },
        }),
    })
    dest = await startDestinationServer({
      plc: plcDir,
      authorizer: ({ url, clientId }) =>
        new TestSourceAuthorizer(source.auth, clientId, `${url}/migrate/callback`),
    })
    account = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts: 25, blobSizes: [20_000, 21_000, 22_000] },
    })
  }, 60_000)

  afterAll(async () => {
    await dest?.close()
    await source?.close()
    await plcDir?.close()
  })

  const get = (path: string) => fetch(`${dest.url}${path}`, { redirect: 'manual' })
  const post = (path: string, form: Record<string, string>, origin = dest.url) =>
    fetch(`${dest.url}${path}`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin },
      body: new URLSearchParams(form).toString(),
    })

  it('walks a user from the handle form to a moved account', async () => {
    const home = await (await get('/migrate')).text()
    expect(home).toContain('<label for="identifier">')

    // Pasted from an app: a profile link with the DID in it.
    const check = await get(
      `/migrate/check?identifier=${encodeURIComponent(`https://bsky.app/profile/${account.did}`)}`,
    )
    expect(check.status).toBe(200)
    const checklist = await check.text()
    expect(checklist).toContain(source.url) // the current server and its capabilities
    expect(checklist).toContain(`/migrate/backup?did=${encodeURIComponent(account.did)}`) // one-click backup (a zip)
    expect(checklist).toContain(account.recoveryKey.did()) // the user's own rotation key
    expect(checklist).toMatch(/HPKE-[34]/)
    expect(checklist).toContain('72 hours')

    const authorize = await post('/migrate/authorize', { did: account.did })
    expect(authorize.status).toBe(303)
    const callback = new URL(authorize.headers.get('location') as string)
    const started = await get(`${callback.pathname}${callback.search}`)
    expect(started.status).toBe(303)
    const transferUrl = new URL(started.headers.get('location') as string)
    expect(transferUrl.origin).toBe(dest.url) // back on our public origin, whatever host the callback used
    const transferPath = transferUrl.pathname
    expect(transferPath).toMatch(/^\/migrate\/transfer\/[0-9a-f-]{36}$/)
    const transferId = transferPath.split('/').at(-1) as string

    let pageText = ''
    for (let i = 0; i < 100 && !pageText.includes('name="token"'); i++) {
      pageText = await (await get(transferPath)).text()
      if (!pageText.includes('name="token"')) {
        expect(pageText).toContain('<progress')
        await new Promise((r) => setTimeout(r, 50))
      }
    }
    expect(pageText).toContain('copied and verified')
    // What the progress script swaps in: the server's own rendering of the numbers.
    const live = (await (await get(`${transferPath}/live`)).json()) as { stage: string; html: string }
    expect(live.stage).toBe('awaitingPlcToken')
    expect(live.html).toContain('Images and files received')

    // The tab was closed; the user signs in again: back to the same move, not a second one.
    const again2 = await post('/migrate/authorize', { did: account.did })
    const callback2 = new URL(again2.headers.get('location') as string)
    const back = await get(`${callback2.pathname}${callback2.search}`)
    expect(back.status).toBe(303)
    expect(new URL(back.headers.get('location') as string).pathname).toBe(transferPath)
    expect((await dest.transfers.listActive()).filter((t) => t.did === account.did)).toHaveLength(1)

    // The user lost the email: a new code, then a second click within the minute is refused.
    const sentBefore = source.store.outbox.filter((m) => m.did === account.did).length
    const resend = await post(`${transferPath}/resend-token`, {})
    expect(resend.status).toBe(200)
    expect(await resend.text()).toContain('A new code is on its way')
    expect(source.store.outbox.filter((m) => m.did === account.did)).toHaveLength(sentBefore + 1)
    const again = await post(`${transferPath}/resend-token`, {})
    expect(again.status).toBe(400)
    expect(await again.text()).toContain('less than a minute ago')
    expect(source.store.outbox.filter((m) => m.did === account.did)).toHaveLength(sentBefore + 1)

    const userKeyTyped = 'did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme'
    const wrong = await post(`${transferPath}/complete`, { token: 'wrong-code', rotationKey: userKeyTyped })
    expect(wrong.status).toBe(400)
    const wrongPage = await wrong.text()
    expect(wrongPage).toContain('was not accepted')
    // What was typed stays, the error is at its field, marked and focused; the key section stays open.
    expect(wrongPage).toContain('value="WRONG-CODE"')
    expect(wrongPage).toMatch(
      /id="token-error"[\s\S]*aria-invalid="true" aria-describedby="token-error" autofocus/,
    )
    expect(wrongPage).toContain(`value="${userKeyTyped}"`)
    expect(wrongPage).toContain('<details id="rotation-key" open>')

    const issued = source.store.outbox.filter((m) => m.did === account.did).at(-1)?.token as string
    // Typed as people do: lower case, a space instead of the dash.
    const token = ` ${issued.toLowerCase().replace('-', ' ')} `
    expect(pageText).toContain('name="rotationKey"')
    // A key that is not usable is refused before anything is sent: the code still works after.
    // A private key pasted by mistake is named as such, and not shown back.
    const secret = Buffer.from(await (await Secp256k1Keypair.create({ exportable: true })).export()).toString(
      'hex',
    )
    const pasted = await post(`${transferPath}/complete`, { token, rotationKey: secret })
    expect(pasted.status).toBe(400)
    const pastedPage = await pasted.text()
    expect(pastedPage).toContain('This looks like a private key')
    expect(pastedPage).not.toContain(secret)
    const badKey = await post(`${transferPath}/complete`, { token, rotationKey: 'did:key:zNotAKey' })
    expect(badKey.status).toBe(400)
    expect(await badKey.text()).toContain('is not the did:key of a secp256k1 or P-256 public key')
    expect((await dest.engine.get(transferId))?.stage).toBe('awaitingPlcToken')

    // Passwords do not move (D24): the user chooses one here, typed twice; a mismatch is refused first.
    expect(pageText).toContain('name="password2"')
    const mismatch = await post(`${transferPath}/complete`, {
      token,
      password: 'a-new-pass-1',
      password2: 'other-pass-2',
    })
    expect(mismatch.status).toBe(400)
    expect(await mismatch.text()).toContain('not the same')
    expect((await dest.engine.get(transferId))?.stage).toBe('awaitingPlcToken')

    // The user adds a rotation key of their own: it comes first, the rest keep their order.
    const userKey = (await Secp256k1Keypair.create()).did()
    const done = await post(`${transferPath}/complete`, {
      token,
      rotationKey: userKey,
      password: 'a-new-pass-1',
      password2: 'a-new-pass-1',
    })
    expect(done.status).toBe(303)
    const result = await (await get(transferPath)).text()
    expect(result).toContain('Your account now lives here')
    expect(result).toContain('the password you chose')
    expect(result).toContain('App passwords and apps you had signed in to do not move')
    expect(dest.store.verifyPassword(account.did, 'a-new-pass-1')).toBe(true)
    expect(dest.store.verifyPassword(account.did, 'other-pass-2')).toBe(false)
    expect((await dest.engine.get(transferId))?.status).toBe('completed')
    const doc = await new plc.Client(plcDir.url).getDocumentData(account.did)
    expect(doc.services.atproto_pds?.endpoint).toBe(dest.url)
    expect(doc.rotationKeys).toEqual([userKey, account.recoveryKey.did(), dest.rotationKey.did()])
    const status = await (await get(`/xrpc/${NSID.getTransferStatus}?transferId=${transferId}`)).json()
    expect(status).toMatchObject({ status: 'completed' })
    // Checking again afterwards: the account already lives here, nothing to move.
    const here = await (await get(`/migrate/check?identifier=${encodeURIComponent(account.did)}`)).text()
    expect(here).toContain('already lives on this server')
  })

  it('shows why the last attempt to finish came back to the code step, and the same code then works', async () => {
    const other = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts: 3, blobSizes: [1000] },
    })
    const authorize = await post('/migrate/authorize', { did: other.did })
    const callback = new URL(authorize.headers.get('location') as string)
    const started = await get(`${callback.pathname}${callback.search}`)
    const transferPath = new URL(started.headers.get('location') as string).pathname
    const transferId = transferPath.split('/').at(-1) as string
    await dest.engine.wait(transferId)
    const token = source.store.outbox.filter((m) => m.did === other.did).at(-1)?.token as string

    brokenDeactivation = true
    const failed = await post(`${transferPath}/complete`, { token })
    brokenDeactivation = false
    expect(failed.status).toBe(400)
    expect(await failed.text()).toContain('did not answer')
    // The user comes back later: the page still says what happened and what to do.
    const later = await (await get(transferPath)).text()
    expect(later).toContain('Your last attempt to finish the move did not complete (SourceUnreachable)')
    expect(later).toContain('Enter your code again')
    expect(later).toContain('name="token"')

    expect((await post(`${transferPath}/complete`, { token })).status).toBe(303)
    const result = await (await get(transferPath)).text()
    expect(result).toContain('Your account now lives here')
    expect(result).not.toContain('did not complete')
    // No password chosen: the result page offers the way to set one by email.
    expect(result).toContain('You did not choose a password for this server yet')
    expect(result).toContain('Email me a code to set my password')
    expect(dest.store.verifyPassword(other.did, '')).toBe(false)
  })

  it('refuses form posts from another site', async () => {
    const res = await post('/migrate/authorize', { did: account.did }, 'https://evil.example')
    expect(res.status).toBe(403)
  })

  it('explains an unknown account and a server without transfers', async () => {
    const unknown = await get('/migrate/check?identifier=did%3Aplc%3Aaaaaaaaaaaaaaaaaaaaaaaaa')
    expect(unknown.status).toBe(400)
    expect(await unknown.text()).toContain('role="alert"')
    // A handle nobody has: the start page again, with what was typed and the error at the field.
    const typo = await get('/migrate/check?identifier=nobody.invalid')
    expect(typo.status).toBe(400)
    const again = await typo.text()
    expect(again).toContain('value="nobody.invalid"')
    expect(again).toContain('aria-describedby="identifier-error"')
  })
})
