import type * as plc from '@did-plc/lib'
import { NSID } from '@pds-transfer/core'
import { createTransferId } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'

const ALL = [NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus]
const DEST = 'https://dest.example/client-metadata.json'

/**
 * Our source answers the current draft's JSON exportAccount beside the v1 stream at the same NSID
 * (spec/dialect-draft.md): which one is asked for is told by the body's shape; capabilities are
 * intersected; the draft's errors by name; completeTransfer signs for a draft transfer keeping the
 * user's rotation key first (D8), and getTransferStatus follows it.
 */
describe("our source serves the current draft's exportAccount", () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let limited: SourceServer

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({ plc: plcDir })
    // A source without app.bsky (no preferences) and without resume.
    limited = await startSourceServer({ plc: plcDir, draftCapabilities: ['base'] })
  }, 60_000)
  afterAll(async () => {
    await limited?.close()
    await source?.close()
    await plcDir?.close()
  })

  async function account(on: SourceServer = source): Promise<FixtureAccount> {
    return buildAccount(on.store, {
      plcUrl: plcDir.url,
      pdsUrl: on.url,
      pdsRotationKey: on.rotationKey,
      shape: {
        posts: 2,
        blobSizes: [],
        state: {
          email: 'draft@example.com',
          emailConfirmed: true,
          inviteCodes: ['code-1'],
          appPasswords: [{ name: 'phone', hash: 'secret' }],
        },
      },
    })
  }

  function call(
    on: SourceServer,
    nsid: string,
    body: unknown,
    grant?: { did: string; clientId?: string },
  ): Promise<Response> {
    return fetch(`${on.url}/xrpc/${nsid}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(grant && {
          authorization: `Bearer ${on.auth.issue({ did: grant.did, clientId: grant.clientId ?? DEST }, ALL)}`,
        }),
      },
      body: JSON.stringify(body),
    })
  }

  it('answers a draft body with JSON: the negotiated capabilities and the private state without credentials', async () => {
    const a = await account()
    const transferId = createTransferId()
    const res = await call(
      source,
      NSID.exportAccount,
      { did: a.did, transferId, capabilities: ['base', 'preferences', 'resumable', 'stratos', 'x-unknown'] },
      { did: a.did },
    )
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
    expect(res.headers.get('cache-control')).toBe('no-store')
    expect(await res.json()).toEqual({
      transferId,
      // The intersection, in the order asked; stratos and the unknown token are dropped, not errors.
      capabilities: ['base', 'preferences', 'resumable'],
      privateState: { email: 'draft@example.com', emailConfirmed: true, inviteCodes: ['code-1'] },
    })
    // Recorded for completeTransfer and getTransferStatus; no repo rev pinned.
    expect(await source.transfers.get(transferId)).toMatchObject({
      status: 'importing',
      algorithm: 'draft-0015',
      clientId: DEST,
    })
  })

  it('intersects with what the source has; capabilities left out mean ["base"]', async () => {
    const a = await account(limited)
    const asked = await call(
      limited,
      NSID.exportAccount,
      { did: a.did, transferId: createTransferId(), capabilities: ['base', 'preferences', 'resumable'] },
      { did: a.did },
    )
    expect(((await asked.json()) as { capabilities: string[] }).capabilities).toEqual(['base'])
    const b = await account(limited)
    const omitted = await call(
      limited,
      NSID.exportAccount,
      { did: b.did, transferId: createTransferId() },
      { did: b.did },
    )
    expect(((await omitted.json()) as { capabilities: string[] }).capabilities).toEqual(['base'])
  })

  it("refuses by the draft's names: another account's token, a bad body, a mixed body, no token", async () => {
    const a = await account()
    const other = await account()
    const transferId = createTransferId()
    const wrongSub = await call(source, NSID.exportAccount, { did: a.did, transferId }, { did: other.did })
    expect(wrongSub.status).toBe(403)
    expect(await wrongSub.json()).toMatchObject({
      error: 'TransferNotAuthorized',
      message: expect.stringMatching(/another account/),
    })
    const badId = await call(source, NSID.exportAccount, { did: a.did, transferId: 'nope' }, { did: a.did })
    expect(badId.status).toBe(400)
    expect(await badId.json()).toMatchObject({
      error: 'InvalidRequest',
      message: expect.stringMatching(/UUIDv7/),
    })
    const badCaps = await call(
      source,
      NSID.exportAccount,
      { did: a.did, transferId, capabilities: 'base' },
      { did: a.did },
    )
    expect(await badCaps.json()).toMatchObject({
      error: 'InvalidRequest',
      message: expect.stringMatching(/capabilities/),
    })
    const mixed = await call(
      source,
      NSID.exportAccount,
      { did: a.did, transferId, capabilities: ['base'], algorithm: 'HPKE-3' },
      { did: a.did },
    )
    expect(mixed.status).toBe(400)
    expect(await mixed.json()).toMatchObject({
      error: 'InvalidRequest',
      message: expect.stringMatching(/mixes the draft's capabilities with v1's algorithm/),
    })
    // The detection probe a destination sends (spec/dialect-draft.md): refused by the draft's name.
    const probe = await call(source, NSID.exportAccount, { did: a.did, transferId })
    expect(probe.status).toBe(401)
    expect(await probe.json()).toMatchObject({ error: 'TransferNotAuthorized' })
    expect(await source.transfers.get(transferId)).toBeUndefined()
  })

  it('a v1 body at the same NSID still gets the v1 path (its validation, not the JSON export)', async () => {
    const a = await account()
    const res = await call(
      source,
      NSID.exportAccount,
      { did: a.did, transferId: createTransferId(), algorithm: 'HPKE-3', encryptionKey: { kty: 'OKP' } },
      { did: a.did },
    )
    expect(res.status).toBe(400)
    expect(await res.json()).toMatchObject({
      error: 'InvalidRequest',
      message: expect.stringMatching(/encryptionKey/),
    })
  })

  it('a repeat is a resume only with resumable; another destination meanwhile is TransferAlreadyActive', async () => {
    const a = await account()
    const transferId = createTransferId()
    const first = await call(
      source,
      NSID.exportAccount,
      { did: a.did, transferId, capabilities: ['base', 'resumable'] },
      { did: a.did },
    )
    expect(first.status).toBe(200)
    const again = await call(
      source,
      NSID.exportAccount,
      { did: a.did, transferId, capabilities: ['base', 'resumable'] },
      { did: a.did },
    )
    expect(again.status).toBe(200)
    const notResumable = await call(source, NSID.exportAccount, { did: a.did, transferId }, { did: a.did })
    expect(notResumable.status).toBe(409)
    expect(await notResumable.json()).toMatchObject({
      error: 'TransferAlreadyActive',
      message: expect.stringMatching(/resumable/),
    })
    const elsewhere = await call(
      source,
      NSID.exportAccount,
      { did: a.did, transferId: createTransferId() },
      { did: a.did, clientId: 'https://other.example/client-metadata.json' },
    )
    expect(elsewhere.status).toBe(409)
    expect(await elsewhere.json()).toMatchObject({ error: 'TransferAlreadyActive' })
  })

  it("completeTransfer signs a draft transfer's move: the user's key kept first, a request dropping it refused", async () => {
    const a = await account()
    const transferId = createTransferId()
    await call(source, NSID.exportAccount, { did: a.did, transferId }, { did: a.did })
    // The draft's destination asks the PDS's requestPlcOperationSignature; the SQLite PDS's equivalent:
    await source.store.requestPlcToken(a.did)
    const code = source.store.outbox.filter((m) => m.did === a.did).at(-1)?.token as string
    const destKey = 'did:key:zQ3shP2mWsZYWgvgM11GKMbBMDkVSXS3JUyErSxnPBLfmGWCV'
    const change = {
      did: a.did,
      transferId,
      plcSignatureToken: code,
      newPdsEndpoint: 'https://dest.example',
      newSigningKey: destKey,
    }
    // What a literal draft destination sends: its own key only. The user's key would be lost (D8).
    const dropping = await call(
      source,
      NSID.completeTransfer,
      { ...change, newRotationKeys: [destKey] },
      { did: a.did },
    )
    expect(dropping.status).toBe(400)
    expect(await dropping.json()).toMatchObject({
      error: 'InvalidRequest',
      message: expect.stringMatching(/drops the account's own rotation keys/),
    })
    expect((await source.store.getAccount(a.did))?.status).toBe('active')

    const keys = [a.recoveryKey.did(), destKey]
    const res = await call(
      source,
      NSID.completeTransfer,
      { ...change, newRotationKeys: keys },
      { did: a.did },
    )
    expect(res.status).toBe(200)
    const { signedPlcOperation } = (await res.json()) as { signedPlcOperation: plc.Operation }
    expect(signedPlcOperation.rotationKeys).toEqual(keys)
    expect(signedPlcOperation.services.atproto_pds?.endpoint).toBe('https://dest.example')
    // The draft: the source deactivates the account as part of completeTransfer (§2.2, §6).
    expect((await source.store.getAccount(a.did))?.status).toBe('deactivated')
    const status = await fetch(`${source.url}/xrpc/${NSID.getTransferStatus}?transferId=${transferId}`, {
      headers: { authorization: `Bearer ${source.auth.issue({ did: a.did, clientId: DEST }, ALL)}` },
    })
    expect(await status.json()).toMatchObject({ transferId, did: a.did, status: 'completed' })
  })
})
