import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AtpAgent } from '@atproto/api'
import { verifyRepoCar } from '@atproto/repo'
import * as plcLib from '@did-plc/lib'
import type { TransferPds } from '@pds-transfer/atproto-pds'
import { PLAIN_PDS_OAUTH_SCOPE } from '@pds-transfer/core'
import {
  PlcDidResolver,
  restoreSourceClient,
  type SourceClient,
  SqliteInboundTransferStore,
  TransferEngine,
} from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixturePng } from '../src/fixtures/png.ts'
import { seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { oauthSourceClient } from '../src/harness/plain-pds-oauth.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { startReferencePds } from '../src/harness/reference-pds.ts'
import { type ServedBackup, servedBackup } from '../src/harness/served-backup.ts'

/**
 * Issue 21, the cooperative restore: the old PDS A still works, but the account's data is read
 * from a backup of it (faster; possible when A is slow or rate-limits getBlob), and A is asked
 * only for what the backup cannot give: the blob written after it, the writes since (a diff at
 * completion), the preferences and email, the PLC code, the signed operation and the
 * deactivation. Every request to A is counted: the repo and the backed-up images never come
 * from it. The result is the account exactly as A held it at the end.
 */
describe('a move whose data comes from a backup while the old PDS cooperates', () => {
  let plc: PlcDirectory
  let a: Awaited<ReturnType<typeof startPlainPds>>
  let b: TransferPds
  let work: string
  let backup: ServedBackup | undefined

  beforeAll(async () => {
    plc = await startPlcDirectory()
    work = await mkdtemp(join(tmpdir(), 'move-from-copy-'))
    a = await startPlainPds(plc.namedUrl)
    b = await startReferencePds(plc)
  }, 180_000)
  afterAll(async () => {
    await backup?.close()
    await b?.close()
    await a?.close()
    await plc?.close()
    if (work) await rm(work, { recursive: true, force: true })
  })

  /** The source client, each request's path counted (instrumentation of the real OAuth client). */
  function counted(client: SourceClient, calls: string[]): SourceClient {
    return {
      url: client.url,
      fetch: (path, init) => {
        calls.push(path.split('?')[0] as string)
        return client.fetch(path, init)
      },
    }
  }

  async function recordsAt(url: string, did: string): Promise<Map<string, string>> {
    const key = (await new plcLib.Client(plc.url).getDocumentData(did)).verificationMethods.atproto as string
    const res = await fetch(`${url}/xrpc/com.atproto.sync.getRepo?did=${did}`)
    const repo = await verifyRepoCar(new Uint8Array(await res.arrayBuffer()), did, key)
    return new Map(repo.creates.map((r) => [`${r.collection}/${r.rkey}`, r.cid.toString()]))
  }
  async function blobsAt(url: string, did: string): Promise<Map<string, Buffer>> {
    const { cids } = (await (await fetch(`${url}/xrpc/com.atproto.sync.listBlobs?did=${did}`)).json()) as {
      cids: string[]
    }
    const out = new Map<string, Buffer>()
    for (const cid of cids.sort())
      out.set(
        cid,
        Buffer.from(
          await (await fetch(`${url}/xrpc/com.atproto.sync.getBlob?did=${did}&cid=${cid}`)).arrayBuffer(),
        ),
      )
    return out
  }

  it('reads the repo and images from the backup, and from A only what the backup lacks', async () => {
    const alice = await seedReferenceAccount(a.url, {
      handle: 'fromcopy.test',
      email: 'fromcopy@example.com',
      password: 'from-copy-password',
      posts: 30,
      images: 4,
      follows: 3,
    })
    const agent = new AtpAgent({ service: a.url })
    await agent.login({ identifier: alice.did, password: alice.password })
    backup = await servedBackup({ did: alice.did, plcUrl: plc.url, workDir: work })

    // After the backup: a post with a new image (the backup has neither).
    const png = fixturePng(32, 32, 99)
    const upload = await agent.com.atproto.repo.uploadBlob(png, { encoding: 'image/png' })
    await agent.com.atproto.repo.createRecord({
      repo: alice.did,
      collection: 'app.bsky.feed.post',
      record: {
        $type: 'app.bsky.feed.post',
        text: 'after the backup',
        createdAt: new Date().toISOString(),
        embed: { $type: 'app.bsky.embed.images', images: [{ image: upload.data.blob, alt: 'new' }] },
      },
    })

    const { client } = await oauthSourceClient({
      pdsUrl: a.url,
      plcUrl: plc.url,
      did: alice.did,
      account: { username: alice.handle, password: alice.password },
      scope: PLAIN_PDS_OAUTH_SCOPE,
    })
    const calls: string[] = []
    const engine = new TransferEngine({
      sink: b.sink,
      store: new SqliteInboundTransferStore(':memory:'),
      keys: b.keys,
      resolver: new PlcDidResolver(plc.url),
      plc: new plcLib.Client(plc.url),
      serviceUrl: b.url,
      rotationKey: b.pds.ctx.plcRotationKey.did(),
      limits: { retry: { attempts: 3, baseDelayMs: 20 } },
    })
    const copy = restoreSourceClient(backup.url, alice.did, backup.token)
    const started = await engine.start({ did: alice.did, client: counted(client, calls), copy })
    expect(started).toMatchObject({ dialect: 'plain', copyUrl: backup.url, sourceUrl: a.url })
    const pulled = await engine.wait(started.transferId)
    expect(pulled.failure).toBeUndefined()
    expect(pulled).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    // Nothing of the repo, and none of the backed-up images, came from A.
    expect(calls).not.toContain('/xrpc/com.atproto.sync.getRepo')
    expect(calls).not.toContain('/xrpc/com.atproto.sync.listBlobs')
    expect(calls.filter((c) => c === '/xrpc/com.atproto.sync.getBlob')).toHaveLength(0)
    expect(calls).toContain('/xrpc/com.atproto.identity.requestPlcOperationSignature')

    // What A holds as the user reads their email: what B must hold at the end.
    const expectedRecords = await recordsAt(a.url, alice.did)
    const expectedBlobs = await blobsAt(a.url, alice.did)
    expect(expectedBlobs.size).toBe(5)
    const code = await a.plcToken(alice.did)
    engine.attach(started.transferId, counted(client, calls))
    const done = await engine.complete(started.transferId, { plcToken: code as string })
    expect(done.failure).toBeUndefined()
    // The post and image written after the backup came from A, as the diff since the backup's rev.
    expect(done).toMatchObject({ status: 'completed', stage: 'activated', catchUps: 1, missingBlobs: [] })
    expect(calls.filter((c) => c === '/xrpc/com.atproto.sync.getBlob')).toHaveLength(1)

    const data = await new plcLib.Client(plc.url).getDocumentData(alice.did)
    expect(data.services.atproto_pds?.endpoint).toBe(b.url)
    expect(await recordsAt(b.url, alice.did)).toEqual(expectedRecords)
    expect(await blobsAt(b.url, alice.did)).toEqual(expectedBlobs)
    await expect(
      agent.com.atproto.repo.createRecord({
        repo: alice.did,
        collection: 'app.bsky.feed.post',
        record: { $type: 'app.bsky.feed.post', text: 'too late', createdAt: new Date().toISOString() },
      }),
    ).rejects.toThrow(/deactivated/i)
  })

  it('refuses a copy for a source that streams the account itself', async () => {
    // B serves the v1 stream; an engine elsewhere is asked to move an account of B's from a copy.
    const bob = await seedReferenceAccount(b.url, {
      handle: 'streams.test',
      email: 'streams@example.com',
      password: 'streams-password',
      posts: 1,
      images: 0,
      follows: 0,
    })
    const engine = new TransferEngine({
      sink: b.sink,
      store: new SqliteInboundTransferStore(':memory:'),
      keys: b.keys,
      resolver: new PlcDidResolver(plc.url),
      plc: new plcLib.Client(plc.url),
      serviceUrl: 'https://elsewhere.example.com',
      rotationKey: b.pds.ctx.plcRotationKey.did(),
    })
    await expect(
      engine.start({
        did: bob.did,
        client: { url: b.url, fetch: (path, init) => fetch(`${b.url}${path}`, init) },
        copy: restoreSourceClient('http://127.0.0.1:9', bob.did),
      }),
    ).rejects.toThrow(/streams the whole account itself/)
  })
})
