import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Secp256k1Keypair } from '@atproto/crypto'
import * as plcLib from '@did-plc/lib'
import { startTransferPds, type TransferPds } from '@pds-transfer/atproto-pds'
import { DRAFT_OAUTH_SCOPE, NSID } from '@pds-transfer/core'
import { type SourceClient, sourceDialect } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { freePort } from '../src/harness/destination-server.ts'
import { listAllRecords } from '../src/harness/list-records.ts'
import { oauthSourceClient } from '../src/harness/plain-pds-oauth.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { startReferencePds } from '../src/harness/reference-pds.ts'

const NO_APPVIEW = { bskyAppViewUrl: 'http://127.0.0.1:9', bskyAppViewDid: 'did:web:appview.invalid' }
const COLLECTIONS = ['app.bsky.feed.post', 'app.bsky.graph.follow']

/**
 * A move from our source serving only the current draft (the reference-PDS adapter: no
 * well-known, the draft's JSON exportAccount and completeTransfer, OAuth at A's own provider)
 * into the reference-PDS destination, which picks the draft dialect itself
 * (spec/dialect-draft.md): data over the sync endpoints, private state from exportAccount, the PLC
 * code after the data, completeTransfer signed by A with the user's key first.
 */
describe('a move from a source serving the current draft', () => {
  let plc: PlcDirectory
  let a: TransferPds
  /** A draft source without preferences or resume (`base` only). */
  let bare: TransferPds
  let b: TransferPds
  const dirs: string[] = []

  async function draftPds(capabilities?: string[]): Promise<TransferPds> {
    const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-draft-'))
    dirs.push(dir)
    return startTransferPds({
      dataDir: dir,
      port: await freePort(),
      plcUrl: plc.namedUrl,
      env: NO_APPVIEW,
      sourceDialects: ['draft'],
      ...(capabilities && { draftCapabilities: capabilities }),
    })
  }

  beforeAll(async () => {
    plc = await startPlcDirectory()
    a = await draftPds()
    bare = await draftPds(['base'])
    b = await startReferencePds(plc)
  }, 180_000)
  afterAll(async () => {
    await Promise.allSettled([a?.close(), bare?.close(), b?.close()])
    await plc?.close()
    for (const dir of dirs) await rm(dir, { recursive: true, force: true })
  })

  let n = 0
  async function seeded(
    on: TransferPds,
  ): Promise<{ alice: SeededAccount; client: SourceClient; calls: string[] }> {
    n++
    const alice = await seedReferenceAccount(on.url, {
      handle: `draftmove${n}.test`,
      email: `draftmove${n}@example.com`,
      password: `draft-move-password-${n}`,
      posts: 30,
      images: 3,
      follows: 4,
    })
    const { client } = await oauthSourceClient({
      pdsUrl: on.url,
      plcUrl: plc.url,
      did: alice.did,
      account: { username: alice.handle, password: alice.password },
      scope: DRAFT_OAUTH_SCOPE,
    })
    // Every call the destination makes, by method name.
    const calls: string[] = []
    const counted: SourceClient = {
      url: client.url,
      fetch: (path, init) => {
        calls.push(path.split('?')[0]?.replace('/xrpc/', '') ?? path)
        return client.fetch(path, init)
      },
    }
    return { alice, client: counted, calls }
  }

  const codeAt = async (pds: TransferPds, did: string) =>
    (
      await pds.pds.ctx.accountManager.db.db
        .selectFrom('email_token')
        .select('token')
        .where('did', '=', did as never)
        .where('purpose', '=', 'plc_operation')
        .executeTakeFirst()
    )?.token as string

  const post = (pds: TransferPds, jwt: string, did: string, text: string) =>
    fetch(`${pds.url}/xrpc/com.atproto.repo.createRecord`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${jwt}` },
      body: JSON.stringify({
        repo: did,
        collection: 'app.bsky.feed.post',
        record: { $type: 'app.bsky.feed.post', text, createdAt: new Date().toISOString() },
      }),
    })

  it('moves the account: data identical, private state, PLC names B with the user key first, A deactivated, B takes posts', async () => {
    const { alice, client, calls } = await seeded(a)
    expect(await sourceDialect(a.url, alice.did)).toBe('draft')
    expect(await sourceDialect(b.url, alice.did)).toBe('v1')

    const started = await b.engine.start({ did: alice.did, client })
    expect(started.dialect).toBe('draft')
    const pulled = await b.engine.wait(started.transferId)
    expect(pulled.failure).toBeUndefined()
    expect(pulled).toMatchObject({
      status: 'importing',
      stage: 'awaitingPlcToken',
      missingBlobs: [],
      capabilities: ['base', 'preferences', 'resumable'],
    })
    // The draft's order: exportAccount first, the code asked for only after the data moved.
    expect(calls[0]).toBe(NSID.exportAccount)
    expect(calls.indexOf('com.atproto.identity.requestPlcOperationSignature')).toBe(calls.length - 1)
    expect(calls).toContain('app.bsky.actor.getPreferences')
    expect(calls).not.toContain('com.atproto.server.getSession')
    for (const c of COLLECTIONS) {
      expect(await listAllRecords(b.url, alice.did, c).catch(() => 'deactivated')).toBe('deactivated')
    }

    // The user goes on posting while reading their email; the catch-up brings it.
    const late = await post(a, alice.accessJwt, alice.did, 'written after the pull')
    expect(late.status).toBe(200)
    const lateUri = ((await late.json()) as { uri: string }).uri
    const before = Object.fromEntries(
      await Promise.all(COLLECTIONS.map(async (c) => [c, await listAllRecords(a.url, alice.did, c)])),
    )
    const userKey = (await Secp256k1Keypair.create()).did()
    const done = await b.engine.complete(started.transferId, {
      plcToken: await codeAt(a, alice.did),
      userRotationKey: userKey,
      password: 'draft-move-new-password',
    })
    expect(done.failure).toBeUndefined()
    expect(done).toMatchObject({ status: 'completed', stage: 'activated' })

    const doc = await new plcLib.Client(plc.url).getDocumentData(alice.did)
    expect(doc.services.atproto_pds?.endpoint).toBe(b.url)
    expect(doc.verificationMethods.atproto).toBe(done.signingKey)
    expect(doc.rotationKeys).toEqual([userKey, b.pds.ctx.plcRotationKey.did()])
    // A deactivated itself in completeTransfer (the draft), and refuses writes.
    expect((await post(a, alice.accessJwt, alice.did, 'too late')).ok).toBe(false)
    expect(
      (await a.pds.ctx.accountManager.getAccount(alice.did as never, { includeDeactivated: true }))
        ?.deactivatedAt,
    ).toBeTruthy()

    // Records (the late one included) and blobs are A's, byte for byte.
    for (const c of COLLECTIONS) expect(await listAllRecords(b.url, alice.did, c)).toEqual(before[c])
    expect(JSON.stringify(before)).toContain(lateUri)
    for (const [cid, bytes] of alice.blobs) {
      const res = await fetch(`${b.url}/xrpc/com.atproto.sync.getBlob?did=${alice.did}&cid=${cid}`)
      expect(Buffer.from(await res.arrayBuffer())).toEqual(Buffer.from(bytes))
    }
    // The private state (email) came in exportAccount's JSON; preferences over getPreferences.
    const session = (await (
      await fetch(`${b.url}/xrpc/com.atproto.server.createSession`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ identifier: alice.did, password: 'draft-move-new-password' }),
      })
    ).json()) as { accessJwt: string; email?: string; emailConfirmed?: boolean; active?: boolean }
    expect(session).toMatchObject({ email: `draftmove${n}@example.com`, active: true })
    const prefs = await fetch(`${b.url}/xrpc/app.bsky.actor.getPreferences`, {
      headers: { authorization: `Bearer ${session.accessJwt}` },
    })
    expect(((await prefs.json()) as { preferences: unknown[] }).preferences).toEqual(alice.preferences)
    expect((await post(b, session.accessJwt, alice.did, 'hello from B')).status).toBe(200)
  })

  it('a capability the source does not have is not used: no getPreferences from a base-only source', async () => {
    const { alice, client, calls } = await seeded(bare)
    const started = await b.engine.start({ did: alice.did, client })
    const pulled = await b.engine.wait(started.transferId)
    expect(pulled.failure).toBeUndefined()
    expect(pulled).toMatchObject({ stage: 'awaitingPlcToken', capabilities: ['base'] })
    expect(calls).not.toContain('app.bsky.actor.getPreferences')
    await b.engine.cancel(started.transferId)
  })

  /** A client whose completeTransfer answer is replaced by `rewrite` of A's real one. */
  function hostile(
    client: SourceClient,
    rewrite: (op: plcLib.Operation) => Promise<plcLib.Operation>,
  ): SourceClient {
    return {
      url: client.url,
      fetch: async (path, init) => {
        const res = await client.fetch(path, init)
        if (!path.includes(NSID.completeTransfer) || !res.ok) return res
        const { signedPlcOperation } = (await res.json()) as { signedPlcOperation: plcLib.Operation }
        return Response.json({ signedPlcOperation: await rewrite(signedPlcOperation) })
      },
    }
  }

  it.each([
    ['drops the user key', (op: plcLib.Operation) => ({ ...op, rotationKeys: op.rotationKeys.slice(1) })],
    [
      'changes the handle too',
      (op: plcLib.Operation) => ({ ...op, alsoKnownAs: ['at://someone-else.test'] }),
    ],
  ])('a hostile draft source whose operation %s is refused, nothing submitted', async (_what, change) => {
    const { alice, client } = await seeded(a)
    const aKey = a.pds.ctx.plcRotationKey as Parameters<typeof plcLib.signOperation>[1]
    const directory = new plcLib.Client(plc.url)
    const evil = hostile(client, async (op) => {
      // Signed by A's rotation key, so PLC itself would take it: only our check stands in the way.
      const { sig: _sig, ...unsigned } = change(op) as plcLib.Operation
      return plcLib.signOperation(unsigned as plcLib.UnsignedOperation, aKey)
    })
    const started = await b.engine.start({ did: alice.did, client: evil })
    expect((await b.engine.wait(started.transferId)).stage).toBe('awaitingPlcToken')
    const before = await directory.getAuditableLog(alice.did)
    const userKey = (await Secp256k1Keypair.create()).did()
    const done = await b.engine
      .complete(started.transferId, { plcToken: await codeAt(a, alice.did), userRotationKey: userKey })
      .catch((err: Error) => err)
    const t = await b.engine.get(started.transferId)
    expect(t).toMatchObject({ status: 'failed', failure: { reason: 'PlcOperationInvalid' } })
    expect(done).toBeDefined()
    expect(await directory.getAuditableLog(alice.did)).toEqual(before)
    expect(
      (await b.pds.ctx.accountManager.getAccount(alice.did as never, { includeDeactivated: true }))
        ?.deactivatedAt,
    ).toBeTruthy()
  })
})
