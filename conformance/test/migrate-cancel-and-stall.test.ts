import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount } from '../src/fixtures/build-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { postForm, signInAtMigrate } from '../src/harness/migrate-forms.ts'
import { onFirstRead, overrideSource } from '../src/harness/override-source.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type PlcGate, startPlcGate } from '../src/harness/plc-gate.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import { TestSourceAuthorizer } from '../src/harness/test-authorizer.ts'

/**
 * Issue 18, item 2: no page is without a next action. A move can be called off until the
 * identity is asked to change (and then starts afresh, not resumed); a completion whose PLC
 * directory stopped answering says so and offers "Finish the move", which needs nothing typed
 * again.
 */
describe('/migrate: cancelling a move, and a completion that stalled', () => {
  let plcDir: PlcDirectory
  let gate: PlcGate
  let source: SourceServer
  let dest: DestinationServer
  /** While set, the source's blob reads wait (a slow disk keeps the pull running). */
  let slow: Promise<void> | undefined

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    gate = await startPlcGate(plcDir.url)
    source = await startSourceServer({
      plc: plcDir,
      wrapSource: (store) =>
        overrideSource(store, {
          async openBlob(did, cid) {
            const stream = await store.openBlob(did, cid)
            return stream && onFirstRead(stream, () => slow)
          },
        }),
    })
    // The destination reaches PLC through the gate; the source directly.
    dest = await startDestinationServer({
      plc: gate,
      limits: { retry: { attempts: 2, baseDelayMs: 5 } },
      authorizer: ({ url, clientId }) =>
        new TestSourceAuthorizer(source.auth, clientId, `${url}/migrate/callback`),
    })
  }, 60_000)

  afterAll(async () => {
    await dest?.close()
    await source?.close()
    await gate?.close()
    await plcDir?.close()
  })

  const form = (path: string, fields: Record<string, string> = {}) => postForm(`${dest.url}${path}`, fields)
  const signIn = (did: string) => signInAtMigrate(dest.url, did)
  const account = () =>
    buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts: 10, blobSizes: [3000, 4000] },
    })

  it('cancels a move while it copies: it stops, says so, and a new sign-in starts afresh', async () => {
    const alice = await account()
    let release = () => {}
    slow = new Promise((r) => (release = r))
    const path = await signIn(alice.did)
    const transferId = path.split('/').at(-1) as string
    const copying = await (await fetch(`${dest.url}${path}`)).text()
    expect(copying).toContain('Cancel this move')
    const cancelled = await form(`${path}/cancel`)
    expect(cancelled.status).toBe(303)
    release()
    slow = undefined
    const t = await dest.engine.get(transferId)
    expect(t).toMatchObject({ status: 'failed', failure: { reason: 'Cancelled' } })
    const page = await (await fetch(`${dest.url}${path}`)).text()
    expect(page).toContain('You cancelled this move.')
    expect(page).toContain('Start a new move')
    expect(await dest.sink.isActive(alice.did)).toBe(false)
    expect((await source.store.getAccount(alice.did))?.status).toBe('active')
    // Signing in again is a new move (a cancelled one is not resumed).
    expect(await signIn(alice.did)).not.toBe(path)
  })

  it('cancels at the code step; nothing changed at the source', async () => {
    const bob = await account()
    const path = await signIn(bob.did)
    const transferId = path.split('/').at(-1) as string
    await dest.engine.wait(transferId)
    expect(await (await fetch(`${dest.url}${path}`)).text()).toContain('Cancel this move')
    expect((await form(`${path}/cancel`)).status).toBe(303)
    expect(await dest.engine.get(transferId)).toMatchObject({ failure: { reason: 'Cancelled' } })
    expect((await source.store.getAccount(bob.did))?.status).toBe('active')
  })

  it('a completion whose PLC directory stopped answering offers "Finish the move", which needs nothing typed again', async () => {
    const carol = await account()
    const path = await signIn(carol.did)
    const transferId = path.split('/').at(-1) as string
    await dest.engine.wait(transferId)
    const code = source.store.outbox.filter((m) => m.did === carol.did).at(-1)?.token as string
    // Down for submissions once the source has signed: the operation is checked and stored.
    gate.mode = 'refuse'
    const stalled = await form(`${path}/complete`, { token: code })
    expect(stalled.status).toBe(400)
    const page = await (await fetch(`${dest.url}${path}`)).text()
    expect(page).toContain('The identity directory did not answer')
    expect(page).toContain('Finish the move')
    expect(page).not.toContain('Cancel this move')
    expect(await dest.engine.get(transferId)).toMatchObject({
      stage: 'submittingPlc',
      failure: { reason: 'PlcUnreachable' },
    })

    gate.mode = 'open'
    expect((await form(`${path}/complete`)).status).toBe(303)
    expect(await dest.engine.get(transferId)).toMatchObject({ status: 'completed', stage: 'activated' })
    expect(await dest.sink.isActive(carol.did)).toBe(true)
  })

  it('says plainly when the identity directory is down before completion starts, and keeps the code', async () => {
    const dave = await account()
    const path = await signIn(dave.did)
    await dest.engine.wait(path.split('/').at(-1) as string)
    const code = source.store.outbox.filter((m) => m.did === dave.did).at(-1)?.token as string
    gate.mode = 'down'
    try {
      const res = await form(`${path}/complete`, { token: code })
      expect(res.status).toBe(400)
      const page = await res.text()
      expect(page).toContain('did not answer')
      expect(page).toContain(`value="${code}"`)
    } finally {
      gate.mode = 'open'
    }
  })
})
