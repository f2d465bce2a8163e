import { generateTransferKey, NSID, publicJwk, type TransferPrivateJwk } from '@pds-transfer/core'
import { createTransferId } from '@pds-transfer/destination'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { exportAndDecode, postExport } from '../src/harness/export-client.ts'
import { type KeyHost, startKeyHost } from '../src/harness/key-host.ts'
import { onFirstRead, overrideSource } from '../src/harness/override-source.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'

const ALL: string[] = [NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus]
const hourFromNow = () => Math.floor(Date.now() / 1000) + 3600

/** Every error row of section 2.6 provoked over HTTP against our source plugin. */
describe('source error rows', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let hostA: KeyHost
  let hostB: KeyHost
  let keyA: TransferPrivateJwk
  let keyB: TransferPrivateJwk
  const accounts: FixtureAccount[] = []

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({ plc: plcDir, exportsPerDestinationPerHour: 4 })
    keyA = generateTransferKey({ alg: 'HPKE-3', exp: hourFromNow() })
    keyB = generateTransferKey({ alg: 'HPKE-4', exp: hourFromNow() })
    hostA = await startKeyHost([publicJwk(keyA)])
    hostB = await startKeyHost([publicJwk(keyB)])
    for (let i = 0; i < 4; i++) {
      accounts.push(
        await buildAccount(source.store, {
          plcUrl: plcDir.url,
          pdsUrl: source.url,
          pdsRotationKey: source.rotationKey,
          shape: { posts: 300, blobSizes: [400_000, 400_000, 400_000] },
        }),
      )
    }
  }, 120_000)

  afterAll(async () => {
    await hostA?.close()
    await hostB?.close()
    await source?.close()
    await plcDir?.close()
  })

  const token = (did: string, host: KeyHost = hostA, nsids = ALL) =>
    source.auth.issue({ did, clientId: host.clientId }, nsids)
  const exportInput = (did: string, key: TransferPrivateJwk = keyA) => ({
    did,
    transferId: createTransferId(),
    algorithm: key.alg,
    encryptionKey: publicJwk(key),
  })
  const complete = (did: string, transferId: string, plcSignatureToken: string, auth = token(did)) =>
    request(`${source.url}/xrpc/${NSID.completeTransfer}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${auth}` },
      body: JSON.stringify({
        did,
        transferId,
        plcSignatureToken,
        newPdsEndpoint: 'https://destination.example',
        newSigningKey: 'did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme',
        newRotationKeys: [],
      }),
    })

  it('TransferAlreadyActive (409) while another destination streams the account', async () => {
    const did = accounts[0]!.did
    const first = await postExport(source.url, token(did), exportInput(did))
    expect(first.statusCode).toBe(200)
    const second = await postExport(source.url, token(did, hostB), exportInput(did, keyB))
    expect(second.statusCode).toBe(409)
    expect(await second.body.json()).toMatchObject({ error: 'TransferAlreadyActive' })
    first.body.destroy()
  })

  it('a destination that disconnects stops the export (status failed)', async () => {
    const did = accounts[0]!.did
    const input = exportInput(did)
    const res = await postExport(source.url, token(did), input)
    expect(res.statusCode).toBe(200)
    for await (const _chunk of res.body) break
    let status: string | undefined
    for (let i = 0; i < 50 && status !== 'failed'; i++) {
      await new Promise((r) => setTimeout(r, 50))
      status = (await source.transfers.get(input.transferId))?.status
    }
    expect(status).toBe('failed')
    expect((await source.transfers.get(input.transferId))?.error).toMatch(/disconnected|aborted|closed/i)
  })

  it('TransferNotFound (404) for an unknown transferId', async () => {
    const did = accounts[1]!.did
    const res = await complete(did, createTransferId(), 'ABCDE-FGHIJ')
    expect(res.statusCode).toBe(404)
    expect(await res.body.json()).toMatchObject({ error: 'TransferNotFound' })
  })

  it('InvalidPlcToken (400), then a good token completes, then AccountDeactivated (400)', async () => {
    const did = accounts[1]!.did
    const transferId = createTransferId()
    await exportAndDecode(source.url, token(did), did, transferId, keyA)
    const wrong = await complete(did, transferId, 'WRONG-TOKEN')
    expect(wrong.statusCode).toBe(400)
    expect(await wrong.body.json()).toMatchObject({ error: 'InvalidPlcToken' })
    expect((await source.store.getAccount(did))?.status).toBe('active')

    const good = source.store.outbox.filter((m) => m.did === did).at(-1)!.token
    // newRotationKeys must keep the user's recovery key (decision D8).
    const res = await request(`${source.url}/xrpc/${NSID.completeTransfer}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token(did)}` },
      body: JSON.stringify({
        did,
        transferId,
        plcSignatureToken: good,
        newPdsEndpoint: 'https://destination.example',
        newSigningKey: 'did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme',
        newRotationKeys: [accounts[1]!.recoveryKey.did()],
      }),
    })
    expect(res.statusCode).toBe(200)
    const { signedPlcOperation } = (await res.body.json()) as {
      signedPlcOperation: { rotationKeys: string[] }
    }
    expect(signedPlcOperation.rotationKeys).toEqual([accounts[1]!.recoveryKey.did()])
    expect((await source.store.getAccount(did))?.status).toBe('deactivated')

    const again = await postExport(source.url, token(did), exportInput(did))
    expect(again.statusCode).toBe(400)
    expect(await again.body.json()).toMatchObject({ error: 'AccountDeactivated' })
  })

  it('a completeTransfer that would drop the user rotation key is refused', async () => {
    const did = accounts[2]!.did
    const transferId = createTransferId()
    await exportAndDecode(source.url, token(did), did, transferId, keyA)
    const good = source.store.outbox.filter((m) => m.did === did).at(-1)!.token
    const res = await complete(did, transferId, good)
    expect(res.statusCode).toBe(400)
    expect(await res.body.json()).toMatchObject({ error: 'InvalidRequest' })
    expect((await source.store.getAccount(did))?.status).toBe('active')
  })

  it('requestPlcToken (extension): scope needed, only for a finished export of this client', async () => {
    const did = accounts[2]!.did
    const ask = (transferId: string, auth: string) =>
      request(`${source.url}/xrpc/${NSID.requestPlcToken}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${auth}` },
        body: JSON.stringify({ did, transferId }),
      })
    const withScope = token(did, hostA, [...ALL, NSID.requestPlcToken])
    const withoutScope = await ask(createTransferId(), token(did))
    expect(withoutScope.statusCode).toBe(403)
    expect(await withoutScope.body.json()).toMatchObject({ error: 'TransferNotAuthorized' })
    const unknown = await ask(createTransferId(), withScope)
    expect(unknown.statusCode).toBe(404)
    expect(await unknown.body.json()).toMatchObject({ error: 'TransferNotFound' })
    const malformed = await ask('not-a-uuid', withScope)
    expect(malformed.statusCode).toBe(400)
    expect(await malformed.body.json()).toMatchObject({ error: 'InvalidRequest' })
  })

  it('getTransferStatus answers only the client that started the transfer, for its account', async () => {
    // A client of its own: the others have spent their hourly exports on the rows above and below.
    const keyC = generateTransferKey({ alg: 'HPKE-3', exp: hourFromNow() })
    const hostC = await startKeyHost([publicJwk(keyC)])
    try {
      const owner = await buildAccount(source.store, {
        plcUrl: plcDir.url,
        pdsUrl: source.url,
        pdsRotationKey: source.rotationKey,
        shape: { posts: 3 },
      })
      const transferId = createTransferId()
      await exportAndDecode(source.url, token(owner.did, hostC), owner.did, transferId, keyC)
      const status = (auth: string) =>
        request(`${source.url}/xrpc/${NSID.getTransferStatus}?transferId=${transferId}`, {
          headers: { authorization: `Bearer ${auth}` },
        })
      const mine = await status(token(owner.did, hostC))
      expect(mine.statusCode).toBe(200)
      expect(await mine.body.json()).toMatchObject({ transferId, did: owner.did, status: expect.any(String) })
      for (const [who, auth] of [
        ['another client, same account', token(owner.did, hostA)],
        ['same client, another account', token(accounts[1]!.did, hostC)],
      ] as const) {
        const res = await status(auth)
        expect(res.statusCode, who).toBe(404)
        const body = (await res.body.json()) as Record<string, unknown>
        expect(body, who).toMatchObject({ error: 'TransferNotFound' })
        expect(body, who).not.toHaveProperty('status')
        expect(body, who).not.toHaveProperty('progress')
      }
    } finally {
      await hostC.close()
    }
  })

  it('RateLimitExceeded (429) past the per-destination hourly limit', async () => {
    // An account no other client is transferring: each new export by the same client
    // supersedes its previous one, so only the rate limit can stop the fifth.
    const did = accounts[3]!.did
    let last = 200
    let accepted = 0
    for (let i = 0; i < 6 && last === 200; i++) {
      const res = await postExport(source.url, token(did, hostB), exportInput(did, keyB))
      last = res.statusCode
      if (last === 200) {
        accepted++
        res.body.destroy()
      } else expect(await res.body.json()).toMatchObject({ error: 'RateLimitExceeded' })
    }
    expect(last).toBe(429)
    expect(accepted).toBe(4)
  })
})

describe('source failures', () => {
  it('ExportFailed (500) before the stream starts, without internals; a reset after it started', async () => {
    const plcDir = await startPlcDirectory()
    let failSnapshot = true
    let vanishing: string | undefined
    const source = await startSourceServer({
      plc: plcDir,
      wrapSource: (store) =>
        overrideSource(store, {
          async snapshotRepo(did) {
            if (failSnapshot) throw new Error('disk on fire at /secret/path')
            return store.snapshotRepo(did)
          },
          async openBlob(did, cid) {
            const stream = await store.openBlob(did, cid)
            if (!stream || cid !== vanishing) return stream
            // Found when the pack was planned, gone when it is read (a disk failing under the export).
            return onFirstRead(stream, () => {
              throw new Error('EIO: i/o error, read')
            })
          },
        }),
    })
    const key = generateTransferKey({ alg: 'HPKE-3', exp: hourFromNow() })
    const host = await startKeyHost([publicJwk(key)])
    try {
      const account = await buildAccount(source.store, {
        plcUrl: plcDir.url,
        pdsUrl: source.url,
        pdsRotationKey: source.rotationKey,
        shape: { posts: 50, blobSizes: [300_000, 300_000, 300_000, 300_000] },
      })
      const auth = source.auth.issue({ did: account.did, clientId: host.clientId }, ALL)
      const input = {
        did: account.did,
        transferId: createTransferId(),
        algorithm: 'HPKE-3',
        encryptionKey: publicJwk(key),
      }
      const res = await postExport(source.url, auth, input)
      expect(res.statusCode).toBe(500)
      const body = (await res.body.json()) as { error: string; message: string }
      expect(body.error).toBe('ExportFailed')
      expect(body.message).not.toContain('/secret/path')

      // A blob vanishing mid-stream: the connection must break, never end cleanly.
      failSnapshot = false
      vanishing = [...account.blobs.keys()].sort()[0]
      const broken = await postExport(source.url, auth, { ...input, transferId: createTransferId() })
      expect(broken.statusCode).toBe(200)
      await expect(broken.body.arrayBuffer()).rejects.toThrow()
    } finally {
      await host.close()
      await source.close()
      await plcDir.close()
    }
  })
})
