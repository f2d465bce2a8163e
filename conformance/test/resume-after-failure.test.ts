import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { signInAtMigrate } from '../src/harness/migrate-forms.ts'
import { onFirstRead, overrideSource } from '../src/harness/override-source.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import { TestSourceAuthorizer } from '../src/harness/test-authorizer.ts'

const BLOBS = 8

/**
 * Issue 16, item 4: a source that goes away for longer than the retries (a deploy, a restart)
 * fails the transfer by name; when it is back, the user signs in again and the same transfer
 * continues from what was verified: same transferId, nothing verified fetched again.
 */
describe('a transfer that failed on the connection continues under the same transferId', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let dest: DestinationServer
  let down = false
  /** Blobs read from the source's disk (the unread existence probe is not a read). */
  const reads: string[] = []

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({
      plc: plcDir,
      blobpackTarget: 20 * 1024,
      wrapSource: (store) =>
        overrideSource(store, {
          async openBlob(did, cid) {
            const stream = await store.openBlob(did, cid)
            if (!stream) return stream
            return onFirstRead(stream, () => {
              // Down after some blobs went out: every attempt breaks until the source is back.
              if (down && reads.length >= 3) throw new Error('ECONNRESET: the source is restarting')
              reads.push(cid)
            })
          },
        }),
    })
    dest = await startDestinationServer({
      plc: plcDir,
      limits: { retry: { attempts: 3, baseDelayMs: 5 } },
      authorizer: ({ url, clientId }) =>
        new TestSourceAuthorizer(source.auth, clientId, `${url}/migrate/callback`),
    })
  }, 60_000)

  afterAll(async () => {
    await dest?.close()
    await source?.close()
    await plcDir?.close()
  })

  const signIn = async (did: string) => (await signInAtMigrate(dest.url, did)).split('/').at(-1) as string

  async function expectIdentical(account: FixtureAccount) {
    expect(Buffer.from(await dest.store.exportCar(account.did))).toEqual(
      Buffer.from(await source.store.exportCar(account.did)),
    )
    for (const [cid] of account.blobs) expect(await dest.sink.hasBlob(account.did, cid), cid).toBe(true)
  }

  it('fails by name while the source is away, then continues after a new sign-in', async () => {
    const account = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts: 30, blobSizes: Array.from({ length: BLOBS }, (_, i) => 15_000 + i * 311) },
    })
    down = true
    const transferId = await signIn(account.did)
    const failed = await dest.engine.wait(transferId)
    expect(failed.status).toBe('failed')
    expect(['SourceUnreachable', 'StreamCut']).toContain(failed.failure?.reason)
    const heldBefore = failed.progress.blobsReceived
    expect(heldBefore).toBeGreaterThan(0)
    expect(heldBefore).toBeLessThan(BLOBS)
    const page = await (await fetch(`${dest.url}/migrate/transfer/${transferId}`)).text()
    expect(page).toContain('Sign in again and continue')

    // The source is back; the user signs in again from the failed page's button.
    down = false
    const readsBefore = reads.length
    expect(await signIn(account.did)).toBe(transferId)
    const done = await dest.engine.wait(transferId)
    expect(done.failure).toBeUndefined()
    expect(done).toMatchObject({ status: 'importing', stage: 'awaitingPlcToken', missingBlobs: [] })
    expect(done.progress.blobsReceived).toBe(BLOBS)
    await expectIdentical(account)
    // Only what was not verified yet was read again.
    const again = reads.slice(readsBefore)
    expect(again.length).toBeLessThanOrEqual(BLOBS - heldBefore + 1)
  })

  it('does not resume a transfer that failed on its data', async () => {
    const account = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts: 3, blobSizes: [1000] },
    })
    const transferId = await signIn(account.did)
    await dest.engine.wait(transferId)
    // Marked as refused by the source (not a connection failure): a new sign-in starts afresh.
    await dest.transfers.update(transferId, {
      status: 'failed',
      stage: 'failed',
      failure: { reason: 'RepoInvalid', message: 'test' },
    })
    await expect(dest.engine.resume(transferId, { url: source.url, fetch })).rejects.toMatchObject({
      code: 'InvalidState',
    })
    expect(await signIn(account.did)).not.toBe(transferId)
  })
})
