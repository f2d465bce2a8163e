import { rename } from 'node:fs/promises'
import { Secp256k1Keypair } from '@atproto/crypto'
import * as plc from '@did-plc/lib'
import { NSID } from '@pds-transfer/core'
import { bearerSourceClient, EngineError, type SourceClient } from '@pds-transfer/destination'
import type { PlcChange } from '@pds-transfer/source'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import { TRANSFER_SCOPES as SCOPES } from '../src/harness/test-authorizer.ts'

/**
 * Issue 26, items 1 and 7, through the engine (not the check functions alone): a source that
 * answers completeTransfer with a validly signed operation that does something else, and an
 * account whose blob files the source's disk lost. Nothing may reach PLC or go live that the user did not
 * agree to.
 */
describe('the destination guards completion', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let dest: DestinationServer
  const plcClient = () => new plc.Client(plcDir.url)

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({ plc: plcDir })
    dest = await startDestinationServer({ plc: plcDir, limits: { retry: { attempts: 2, baseDelayMs: 5 } } })
  }, 60_000)

  afterAll(async () => {
    await dest?.close()
    await source?.close()
    await plcDir?.close()
  })

  async function imported(blobSizes = [1200]) {
    const account = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts: 4, blobSizes },
    })
    const client = bearerSourceClient(
      source.url,
      source.auth.issue({ did: account.did, clientId: dest.clientId }, SCOPES),
    )
    return { account, client }
  }

  const code = (account: FixtureAccount) =>
    source.store.outbox.filter((m) => m.did === account.did).at(-1)?.token as string

  /** The source's real answer replaced by an operation it signs for `change` instead. */
  const answering = (
    client: SourceClient,
    account: FixtureAccount,
    change: (asked: PlcChange) => PlcChange,
  ) => ({
    url: client.url,
    async fetch(path: string, init?: RequestInit) {
      const res = await client.fetch(path, init)
      if (!path.includes(NSID.completeTransfer) || !res.ok) return res
      await res.body?.cancel()
      const asked = JSON.parse(String(init?.body)) as PlcChange
      const wanted = change(asked)
      // Signed with the source's real rotation key, as a buggy or hostile source could (our own
      // source's signTransferOperation would refuse some of these).
      const last = await plcClient().getLastOp(account.did)
      if (last.type === 'plc_tombstone') throw new Error('tombstoned')
      const op = await plc.createUpdateOp(last, source.rotationKey, (n) => ({
        ...n,
        rotationKeys: wanted.newRotationKeys.filter((k) => k !== source.rotationKey.did()),
        verificationMethods: { ...n.verificationMethods, atproto: wanted.newSigningKey },
        services: {
          ...n.services,
          atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: wanted.newPdsEndpoint },
        },
      }))
      return Response.json({ signedPlcOperation: op })
    },
  })

  const hostile: Array<[string, (asked: PlcChange) => PlcChange]> = [
    [
      "drops the user's recovery key",
      (asked) => ({ ...asked, newRotationKeys: asked.newRotationKeys.slice(1) }),
    ],
    ['points the DID at another PDS', (asked) => ({ ...asked, newPdsEndpoint: 'https://elsewhere.example' })],
    [
      'names another signing key',
      (asked) => ({ ...asked, newSigningKey: 'did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme' }),
    ],
  ]

  for (const [what, change] of hostile) {
    it(`refuses a signed operation that ${what}: PlcOperationInvalid, PLC unchanged, account inactive`, async () => {
      const { account, client } = await imported()
      const started = await dest.engine.start({ did: account.did, client })
      expect((await dest.engine.wait(started.transferId)).stage).toBe('awaitingPlcToken')
      const logBefore = await plcClient().getAuditableLog(account.did)
      const done = await dest.engine.complete(started.transferId, {
        plcToken: code(account),
        client: answering(client, account, change),
      })
      expect(done).toMatchObject({ status: 'failed', failure: { reason: 'PlcOperationInvalid' } })
      expect(await plcClient().getAuditableLog(account.did)).toEqual(logBefore)
      expect((await plcClient().getDocumentData(account.did)).services.atproto_pds?.endpoint).toBe(source.url)
      expect(await dest.sink.isActive(account.did)).toBe(false)
    })
  }

  it('refuses a user rotation key that the operation does not put first', async () => {
    const { account, client } = await imported()
    const started = await dest.engine.start({ did: account.did, client })
    await dest.engine.wait(started.transferId)
    const userKey = (await Secp256k1Keypair.create()).did()
    const done = await dest.engine.complete(started.transferId, {
      plcToken: code(account),
      userRotationKey: userKey,
      client: answering(client, account, (asked) => ({
        ...asked,
        newRotationKeys: [...asked.newRotationKeys.filter((k) => k !== userKey), userKey],
      })),
    })
    expect(done).toMatchObject({ status: 'failed', failure: { reason: 'PlcOperationInvalid' } })
    expect(await dest.sink.isActive(account.did)).toBe(false)
  })

  it('does not move an account with missing blobs until the user accepts the list', async () => {
    const { account, client } = await imported([1000, 2000, 3000])
    const missing = [...account.blobs.keys()][1] as string
    // The source's disk lost the file; its database still lists the blob.
    const path = source.store.blobPath(missing)
    await rename(path, `${path}.lost`)
    try {
      const started = await dest.engine.start({ did: account.did, client })
      const t = await dest.engine.wait(started.transferId)
      expect(t.failure?.message).toBeUndefined()
      expect(t).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [missing] })
      const refused = await dest.engine
        .complete(started.transferId, { plcToken: code(account) })
        .catch((e) => e)
      expect(refused).toBeInstanceOf(EngineError)
      expect((refused as EngineError).code).toBe('InvalidState')
      expect((refused as Error).message).toContain(missing)
      expect((await source.store.getAccount(account.did))?.status).toBe('active')
      expect((await plcClient().getDocumentData(account.did)).services.atproto_pds?.endpoint).toBe(source.url)

      const done = await dest.engine.complete(started.transferId, {
        plcToken: code(account),
        acceptMissingBlobs: true,
      })
      expect(done).toMatchObject({ status: 'completed', stage: 'activated' })
      expect(await dest.sink.hasBlob(account.did, missing)).toBe(false)
    } finally {
      await rename(`${path}.lost`, path)
    }
  })
})
