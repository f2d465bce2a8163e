import { createWriteStream } from 'node:fs'
import { mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { AtpAgent } from '@atproto/api'
import { P256Keypair } from '@atproto/crypto'
import { verifyRepoCar } from '@atproto/repo'
import * as plcLib from '@did-plc/lib'
import type { TransferPds } from '@pds-transfer/atproto-pds'
import {
  accountZip,
  ExportUnreadable,
  exportSourceClient,
  type TransferEngine,
} from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { startReferencePds } from '../src/harness/reference-pds.ts'

/**
 * Issue 21, "bring your own backup": an account restored onto C from a plain export the user
 * kept, after its PDS died with its disk. Two exports made while A still worked: the zip
 * /migrate's checklist offers (repo.car, blobs/<cid>, no preferences), and a folder laid out as
 * goat writes one (`<did>.<rev>.car`, `<did>_blobs/<cid>`, prefs.json), fetched from A's own
 * endpoints, not by our code. Each is read through the same verified pull as any copy; the
 * user's key signs the identity over.
 */
describe('restore from an export the user kept', () => {
  let plc: PlcDirectory
  let a: Awaited<ReturnType<typeof startPlainPds>> | undefined
  let c: TransferPds
  let work: string
  let directory: plcLib.Client
  const accounts: { account: SeededAccount; user: P256Keypair; oldKey: string; preferences?: unknown[] }[] =
    []
  const records = new Map<string, Map<string, string>>()
  const blobs = new Map<string, Map<string, Buffer>>()

  async function recordsIn(url: string, did: string, key: string): Promise<Map<string, string>> {
    const res = await fetch(`${url}/xrpc/com.atproto.sync.getRepo?did=${did}`)
    const repo = await verifyRepoCar(new Uint8Array(await res.arrayBuffer()), did, key)
    return new Map(repo.creates.map((r) => [`${r.collection}/${r.rkey}`, r.cid.toString()]))
  }
  async function blobsAt(url: string, did: string): Promise<Map<string, Buffer>> {
    const list = (await (await fetch(`${url}/xrpc/com.atproto.sync.listBlobs?did=${did}`)).json()) as {
      cids: string[]
    }
    const out = new Map<string, Buffer>()
    for (const cid of list.cids.sort()) {
      const res = await fetch(`${url}/xrpc/com.atproto.sync.getBlob?did=${did}&cid=${cid}`)
      out.set(cid, Buffer.from(await res.arrayBuffer()))
    }
    return out
  }

  beforeAll(async () => {
    plc = await startPlcDirectory()
    work = await mkdtemp(join(tmpdir(), 'restore-export-test-'))
    a = await startPlainPds(plc.namedUrl, { dataDir: join(work, 'pds-a') })
    c = await startReferencePds(plc)
    directory = new plcLib.Client(plc.url)
    const pdsA = a
    for (const [i, handle] of ['zipped.test', 'goat.test'].entries()) {
      const account = await seedReferenceAccount(pdsA.url, {
        handle,
        email: `${handle}@example.com`,
        password: `${handle}-password`,
        posts: 15 + i * 10,
        images: 3,
        follows: 2,
      })
      // The user's key, put first while A still worked (pds-identity add-key).
      const user = await P256Keypair.create({ exportable: true })
      await directory.updateData(account.did, pdsA.pds.ctx.plcRotationKey, (op) => ({
        ...op,
        rotationKeys: [user.did(), ...op.rotationKeys],
      }))
      const oldKey = (await directory.getDocumentData(account.did)).verificationMethods.atproto as string
      records.set(account.did, await recordsIn(pdsA.url, account.did, oldKey))
      blobs.set(account.did, await blobsAt(pdsA.url, account.did))
      accounts.push({ account, user, oldKey })
    }

    // The zip the /migrate checklist offers, downloaded while A worked.
    const [zipped, goat] = accounts as [(typeof accounts)[0], (typeof accounts)[0]]
    const zip = accountZip({ source: pdsA.url, did: zipped.account.did, madeBy: 'test' })
    await pipeline(zip.stream, createWriteStream(join(work, 'zipped.zip')))

    // A folder as goat lays one out, from A's own sync endpoints, with the preferences.
    const folder = join(work, 'goat-export')
    const did = goat.account.did
    await mkdir(join(folder, `${did}_blobs`), { recursive: true })
    const head = (await (
      await fetch(`${pdsA.url}/xrpc/com.atproto.sync.getLatestCommit?did=${did}`)
    ).json()) as {
      rev: string
    }
    const car = await fetch(`${pdsA.url}/xrpc/com.atproto.sync.getRepo?did=${did}`)
    await writeFile(join(folder, `${did}.${head.rev}.car`), Buffer.from(await car.arrayBuffer()))
    for (const [cid, bytes] of blobs.get(did) as Map<string, Buffer>)
      await writeFile(join(folder, `${did}_blobs`, cid), bytes)
    const agent = new AtpAgent({ service: pdsA.url })
    await agent.login({ identifier: did, password: goat.account.password })
    goat.preferences = (await agent.app.bsky.actor.getPreferences()).data.preferences
    await writeFile(join(folder, 'prefs.json'), JSON.stringify({ preferences: goat.preferences }))

    // A dies with its disk.
    await pdsA.close()
    a = undefined
    await rm(join(work, 'pds-a'), { recursive: true, force: true })
  }, 240_000)
  afterAll(async () => {
    await c?.close()
    await a?.close()
    await plc?.close()
    if (work) await rm(work, { recursive: true, force: true })
  })

  /** Restores from `path`, with the user signing the operation C prepares, and checks the result. */
  async function restore(
    engine: TransferEngine,
    path: string,
    index: number,
    extra: { email?: string } = {},
  ) {
    const { account, user } = accounts[index] as (typeof accounts)[0]
    const client = await exportSourceClient(path, account.did)
    try {
      const started = await engine.startRestore({ did: account.did, client, userKey: user.did() })
      const held = await engine.wait(started.transferId)
      expect(held.failure).toBeUndefined()
      expect(held).toMatchObject({ stage: 'awaitingRecovery', missingBlobs: [] })
      const request = await engine.restoreOperation(started.transferId)
      const sig = await user.sign(new Uint8Array(Buffer.from(request.bytesToSign, 'base64')))
      const done = await engine.completeRestore(started.transferId, {
        signedOperation: { ...request.operation, sig: Buffer.from(sig).toString('base64url') },
        ...extra,
      })
      expect(done).toMatchObject({ status: 'completed', stage: 'activated' })
      const data = await directory.getDocumentData(account.did)
      expect(data.services.atproto_pds?.endpoint).toBe(c.url)
      expect(await recordsIn(c.url, account.did, data.verificationMethods.atproto as string)).toEqual(
        records.get(account.did),
      )
      expect(await blobsAt(c.url, account.did)).toEqual(blobs.get(account.did))
      expect(await c.sink.isActive(account.did)).toBe(true)
      return held
    } finally {
      await client.close()
    }
  }

  it('restores every record and image from the zip /migrate offered, saying what it lacked', async () => {
    const held = await restore(c.engine, join(work, 'zipped.zip'), 0, { email: 'zipped@example.com' })
    expect(held.notRestored).toEqual([
      expect.stringMatching(/^preferences \(.*PreferencesNotBackedUp/),
      'email (the copy does not hold it)',
    ])
    const did = (accounts[0] as (typeof accounts)[0]).account.did
    expect((await c.pds.ctx.accountManager.getAccount(did as `did:plc:${string}`))?.email).toBe(
      'zipped@example.com',
    )
  })

  it('restores a goat-layout folder, preferences included', async () => {
    const goat = accounts[1] as (typeof accounts)[0]
    const held = await restore(c.engine, join(work, 'goat-export'), 1, { email: 'goat@example.com' })
    expect(held.notRestored).toEqual(['email (the copy does not hold it)'])
    const prefs = await c.pds.ctx.actorStore.read(goat.account.did as `did:plc:${string}`, (store) =>
      store.pref.getPreferences('app.bsky', { hasAccessFull: true } as never),
    )
    expect(prefs).toEqual(
      (goat.preferences as { $type: string }[]).filter(
        (p) => p.$type !== 'app.bsky.actor.defs#declaredAgePref',
      ),
    )
  })

  it('says plainly what is wrong with an export before anything starts', async () => {
    const [zipped, goat] = accounts as [(typeof accounts)[0], (typeof accounts)[0]]
    // Another account's export.
    await expect(exportSourceClient(join(work, 'zipped.zip'), goat.account.did)).rejects.toThrow(
      new RegExp(`holds the repository of ${zipped.account.did}, not of ${goat.account.did}`),
    )
    // A zip cut short on its way (the central directory is at the end).
    const cut = join(work, 'cut.zip')
    await pipeline(
      (await import('node:fs')).createReadStream(join(work, 'zipped.zip')),
      createWriteStream(cut),
    )
    await truncate(cut, 2000)
    await expect(exportSourceClient(cut, zipped.account.did)).rejects.toBeInstanceOf(ExportUnreadable)
    // Not a zip, and a folder without a repository.
    await writeFile(join(work, 'notes.txt'), 'my posts')
    await expect(exportSourceClient(join(work, 'notes.txt'), zipped.account.did)).rejects.toThrow(/not a zip/)
    await mkdir(join(work, 'empty'), { recursive: true })
    await expect(exportSourceClient(join(work, 'empty'), zipped.account.did)).rejects.toThrow(
      /holds no repository/,
    )
  })

  it('answers as a PDS would: pages of blobs, and a damaged image named missing, not retried', async () => {
    const goat = accounts[1] as (typeof accounts)[0]
    const did = goat.account.did
    const cids = [...(blobs.get(did) as Map<string, Buffer>).keys()]
    const damaged = cids[1] as string
    await writeFile(join(work, 'goat-export', `${did}_blobs`, damaged), 'not the image')
    const client = await exportSourceClient(join(work, 'goat-export'), did)
    try {
      const listed: string[] = []
      let cursor: string | undefined
      do {
        const q = new URLSearchParams({ did, limit: '2', ...(cursor && { cursor }) })
        const page = (await (await client.fetch(`/xrpc/com.atproto.sync.listBlobs?${q}`)).json()) as {
          cids: string[]
          cursor?: string
        }
        listed.push(...page.cids)
        cursor = page.cursor
      } while (cursor)
      expect(listed).toEqual(cids)
      const bad = await client.fetch(`/xrpc/com.atproto.sync.getBlob?did=${did}&cid=${damaged}`)
      expect(bad.status).toBe(404)
      expect(await bad.json()).toMatchObject({
        error: 'BlobNotFound',
        message: expect.stringMatching(/damaged/),
      })
      const good = await client.fetch(`/xrpc/com.atproto.sync.getBlob?did=${did}&cid=${cids[0]}`)
      expect(Buffer.from(await good.arrayBuffer())).toEqual(blobs.get(did)?.get(cids[0] as string))
      const other = await client.fetch('/xrpc/com.atproto.sync.getLatestCommit?did=did:plc:someoneelse')
      expect(other.status).toBe(404)
    } finally {
      await client.close()
    }
  })
})
