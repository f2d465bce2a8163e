import { decodeCid } from '@atproto/lex-data'
import { NSID } from '@pds-transfer/core'
import { bearerSourceClient, type SourceClient } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount, fixtureBytes } from '../src/fixtures/build-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { overrideSource } from '../src/harness/override-source.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'

const SCOPES = [NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus, 'com.atproto.sync.getBlob']

/**
 * Erratum E4 and decision 6: a post (with an image) written on the source after the export and
 * before completion reaches the destination; completion is never allowed to drop it.
 */
describe('erratum E4: writes between the export and completeTransfer', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let dest: DestinationServer
  /** Set by a test: runs inside the source's `deactivate`, before it takes effect (a racing write). */
  let beforeDeactivate: (() => Promise<void>) | undefined

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({
      plc: plcDir,
      wrapSource: (store) =>
        overrideSource(store, {
          async deactivate(...args) {
            const racing = beforeDeactivate
            beforeDeactivate = undefined
            await racing?.()
            return store.deactivate(...args)
          },
        }),
    })
    dest = await startDestinationServer({ plc: plcDir })
  }, 60_000)

  afterAll(async () => {
    await dest?.close()
    await source?.close()
    await plcDir?.close()
  })

  async function importAccount() {
    const account = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts: 20, blobSizes: [25_000, 26_000] },
    })
    const client: SourceClient = bearerSourceClient(
      source.url,
      source.auth.issue({ did: account.did, clientId: dest.clientId }, SCOPES),
    )
    const t = await dest.engine.wait((await dest.engine.start({ did: account.did, client })).transferId)
    expect(t.stage).toBe('awaitingPlcToken')
    return { account, transferId: t.transferId }
  }

  /** A new post with a new image, as the user would write it on the source. */
  async function writePost(account: FixtureAccount, rkey: string, seed: number) {
    const bytes = fixtureBytes(31_000, seed)
    const cid = await source.store.putBlob(account.did, bytes)
    account.blobs.set(cid.toString(), bytes)
    const image = { $type: 'blob', ref: decodeCid(cid.bytes), mimeType: 'image/jpeg', size: bytes.length }
    await source.store.writeRecords(account.did, account.signingKey, [
      {
        collection: 'app.bsky.feed.post',
        rkey,
        record: {
          $type: 'app.bsky.feed.post',
          text: `written during the transfer (${rkey})`,
          createdAt: new Date().toISOString(),
          embed: { $type: 'app.bsky.embed.images', images: [{ alt: 'late', image }] },
        },
      },
    ])
    return cid.toString()
  }

  const latestToken = (did: string) =>
    source.store.outbox.filter((m) => m.did === did).at(-1)?.token as string

  async function expectIdentical(account: FixtureAccount) {
    expect(Buffer.from(await dest.store.exportCar(account.did))).toEqual(
      Buffer.from(await source.store.exportCar(account.did)),
    )
    for (const [cid] of account.blobs) expect(await dest.sink.hasBlob(account.did, cid), cid).toBe(true)
  }

  it('a write after the export: completion catches up first, then moves the account', async () => {
    const { account, transferId } = await importAccount()
    const token = latestToken(account.did)
    const lateBlob = await writePost(account, '3latepost0001', 7)
    expect(await dest.sink.hasBlob(account.did, lateBlob)).toBe(false)

    const done = await dest.engine.complete(transferId, { plcToken: token })
    expect(done.failure).toBeUndefined()
    expect(done).toMatchObject({ status: 'completed', catchUps: 1 })
    await expectIdentical(account)
    // The catch-up export did not email the user another token.
    expect(latestToken(account.did)).toBe(token)
  })

  it('a write racing the deactivation: the source undoes it, the destination catches up, nothing is lost', async () => {
    const { account, transferId } = await importAccount()
    const first = latestToken(account.did)
    beforeDeactivate = async () => {
      await writePost(account, '3racepost0001', 8)
    }
    // The token is spent on the attempt the race spoiled; the source sends a fresh one.
    await expect(dest.engine.complete(transferId, { plcToken: first })).rejects.toMatchObject({
      error: 'InvalidPlcToken',
    })
    expect((await source.store.getAccount(account.did))?.status).toBe('active')
    const waiting = await dest.engine.get(transferId)
    expect(waiting).toMatchObject({ status: 'importing', stage: 'awaitingPlcToken', catchUps: 1 })
    await expectIdentical(account)

    const fresh = latestToken(account.did)
    expect(fresh).not.toBe(first)
    const done = await dest.engine.complete(transferId, { plcToken: fresh })
    expect(done.failure).toBeUndefined()
    expect(done.status).toBe('completed')
    expect((await source.store.getAccount(account.did))?.status).toBe('deactivated')
    await expectIdentical(account)
  })

  it('once deactivated for the move, the source takes no more writes', async () => {
    const { account, transferId } = await importAccount()
    await dest.engine.complete(transferId, { plcToken: latestToken(account.did) })
    await expect(writePost(account, '3toolate00001', 9)).rejects.toThrow(/RepoDeactivated/)
  })
})
