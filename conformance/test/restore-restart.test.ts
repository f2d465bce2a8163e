import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { P256Keypair } from '@atproto/crypto'
import * as plcLib from '@did-plc/lib'
import type { TransferPds } from '@pds-transfer/atproto-pds'
import {
  PlcDidResolver,
  RecoverCopies,
  restoreSourceClient,
  SqliteInboundTransferStore,
  TransferEngine,
} from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { startReferencePds } from '../src/harness/reference-pds.ts'
import { type ServedBackup, servedBackup } from '../src/harness/served-backup.ts'

/**
 * Issue 21: a restore from a copy at an address (the backup read API, with its token) outlives a
 * restart of the new PDS in the middle of its pull. The copy's address and token are noted by
 * `RecoverCopies` (what /recover does), the engine is shut down while the copy is being read,
 * and the next process's `recover()` resumes the pull from what was verified, to the end: the
 * user signs and the account is back, every image there. Without the note the restore would end
 * `Interrupted` and the user would start again.
 */
describe('a restore resumed after a restart of the new PDS', () => {
  let plc: PlcDirectory
  let a: Awaited<ReturnType<typeof startPlainPds>>
  let c: TransferPds
  let work: string
  let backup: ServedBackup | undefined
  let openGate: () => void = () => {}

  beforeAll(async () => {
    plc = await startPlcDirectory()
    work = await mkdtemp(join(tmpdir(), 'restore-restart-'))
    a = await startPlainPds(plc.namedUrl)
    c = await startReferencePds(plc)
  }, 180_000)
  afterAll(async () => {
    openGate()
    await backup?.close()
    await c?.close()
    await a?.close()
    await plc?.close()
    if (work) await rm(work, { recursive: true, force: true })
  })

  it('reads the rest of the copy after the restart and finishes', async () => {
    const who = await seedReferenceAccount(a.url, {
      handle: 'restarted.test',
      email: 'restarted@example.com',
      password: 'restarted-password',
      posts: 20,
      images: 5,
      follows: 2,
    })
    const user = await P256Keypair.create({ exportable: true })
    const directory = new plcLib.Client(plc.url)
    await directory.updateData(who.did, a.pds.ctx.plcRotationKey, (op) => ({
      ...op,
      rotationKeys: [user.did(), ...op.rotationKeys],
    }))
    // The copy hangs on its images until the gate opens: the restart comes while it is read.
    const gate = new Promise<void>((resolve) => {
      openGate = resolve
    })
    let blobRequests = 0
    backup = await servedBackup({
      did: who.did,
      plcUrl: plc.url,
      workDir: work,
      beforeListen: (api) =>
        api.addHook('onRequest', async (request) => {
          if (!request.url.includes('com.atproto.sync.getBlob')) return
          blobRequests++
          await gate
        }),
    })
    const readUrl = backup.url

    const copies = new RecoverCopies(join(work, 'copies'))
    const storePath = join(work, 'transfers.sqlite')
    const engineAt = (transfers: SqliteInboundTransferStore) =>
      new TransferEngine({
        sink: c.sink,
        store: transfers,
        keys: c.keys,
        resolver: new PlcDidResolver(plc.url),
        plc: directory,
        serviceUrl: c.url,
        rotationKey: c.pds.ctx.plcRotationKey.did(),
        restoreClient: (t) => copies.restoreClient(t),
      })
    const first = new SqliteInboundTransferStore(storePath)
    const before = engineAt(first)
    const started = await before.startRestore({
      did: who.did,
      client: restoreSourceClient(readUrl, who.did, backup.token),
      userKey: user.did(),
    })
    await copies.rememberAddress(started.transferId, readUrl, backup.token)
    // The repo is verified and held; the images are being asked for.
    for (let i = 0; i < 200 && !((await first.get(started.transferId))?.repo && blobRequests > 0); i++)
      await new Promise((r) => setTimeout(r, 25))
    expect((await first.get(started.transferId))?.repo).toBeDefined()
    await before.close()
    first.close()

    openGate()
    const second = new SqliteInboundTransferStore(storePath)
    const after = engineAt(second)
    const recovered = await after.recover()
    expect(recovered.map((t) => t.stage)).toEqual(['retrying'])
    const held = await after.wait(started.transferId)
    expect(held.failure).toBeUndefined()
    expect(held).toMatchObject({ stage: 'awaitingRecovery', missingBlobs: [] })
    const request = await after.restoreOperation(started.transferId)
    const sig = await user.sign(new Uint8Array(Buffer.from(request.bytesToSign, 'base64')))
    const done = await after.completeRestore(started.transferId, {
      signedOperation: { ...request.operation, sig: Buffer.from(sig).toString('base64url') },
      email: 'restarted@new.example.com',
    })
    expect(done).toMatchObject({ status: 'completed', stage: 'activated' })
    const listed = (await (
      await fetch(`${c.url}/xrpc/com.atproto.sync.listBlobs?did=${who.did}`)
    ).json()) as {
      cids: string[]
    }
    expect(listed.cids).toHaveLength(5)
    // The note of the copy (with its token) goes once the restore is done.
    expect(await copies.sweep((id) => after.get(id))).toBe(1)
    expect(await readdir(join(work, 'copies'))).toEqual([])
    second.close()
  })
})
