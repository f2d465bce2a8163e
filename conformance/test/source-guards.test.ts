import { generateTransferKey, NSID, publicJwk } from '@pds-transfer/core'
import { bearerSourceClient, createTransferId, moveRotationKeys } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { postExport } from '../src/harness/export-client.ts'
import { type KeyHost, startKeyHost } from '../src/harness/key-host.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'

const ALL = [
  NSID.exportAccount,
  NSID.completeTransfer,
  NSID.getTransferStatus,
  NSID.requestPlcToken,
  'com.atproto.sync.getBlob',
]

/**
 * Issue 26, items 2 and 3: the source's authorization guards on the calls that can take an
 * account away. Each case is a token that is valid but wrong in exactly one way; each must be
 * refused with the account still active and nothing signed.
 */
describe('source guards on completion', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let dest: DestinationServer
  let keyHost: KeyHost

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({ plc: plcDir })
    dest = await startDestinationServer({ plc: plcDir })
    keyHost = await startKeyHost([
      publicJwk(generateTransferKey({ alg: 'HPKE-3', exp: Math.floor(Date.now() / 1000) + 3600 })),
    ])
  }, 60_000)

  afterAll(async () => {
    await keyHost?.close()
    await dest?.close()
    await source?.close()
    await plcDir?.close()
  })

  /** An account whose export to `dest` finished: the source waits for completeTransfer. */
  async function exported(): Promise<{ account: FixtureAccount; transferId: string; code: string }> {
    const account = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts: 3, blobSizes: [1500] },
    })
    const client = bearerSourceClient(
      source.url,
      source.auth.issue({ did: account.did, clientId: dest.clientId }, ALL),
    )
    const started = await dest.engine.start({ did: account.did, client })
    const t = await dest.engine.wait(started.transferId)
    expect(t.stage).toBe('awaitingPlcToken')
    const code = source.store.outbox.filter((m) => m.did === account.did).at(-1)?.token as string
    return { account, transferId: started.transferId, code }
  }

  const call = async (nsid: string, token: string, body?: unknown, query = '') => {
    const res = await fetch(`${source.url}/xrpc/${nsid}${query}`, {
      method: body === undefined ? 'GET' : 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    })
    return { status: res.status, body: (await res.json()) as { error?: string; message?: string } }
  }

  const completeInput = async (account: FixtureAccount, transferId: string, code: string) => ({
    did: account.did,
    transferId,
    plcSignatureToken: code,
    newPdsEndpoint: dest.url,
    newSigningKey: (await dest.engine.get(transferId))?.signingKey,
    newRotationKeys: moveRotationKeys(
      [account.recoveryKey.did(), source.rotationKey.did()],
      dest.rotationKey.did(),
    ),
  })

  const stillActive = async (account: FixtureAccount) => {
    expect((await source.store.getAccount(account.did))?.status).toBe('active')
    const transfer = (await source.transfers.findActive(account.did)) ?? undefined
    expect(transfer?.completion?.signedOperation).toBeUndefined()
  }

  it('each endpoint refuses a token that lacks exactly its scope', async () => {
    const { account, transferId, code } = await exported()
    const without = (nsid: string) =>
      source.auth.issue(
        { did: account.did, clientId: dest.clientId },
        ALL.filter((n) => n !== nsid),
      )
    const complete = await call(
      NSID.completeTransfer,
      without(NSID.completeTransfer),
      await completeInput(account, transferId, code),
    )
    expect(complete).toMatchObject({ status: 403, body: { error: 'TransferNotAuthorized' } })
    const status = await call(
      NSID.getTransferStatus,
      without(NSID.getTransferStatus),
      undefined,
      `?did=${encodeURIComponent(account.did)}&transferId=${transferId}`,
    )
    expect(status).toMatchObject({ status: 403, body: { error: 'TransferNotAuthorized' } })
    const resend = await call(NSID.requestPlcToken, without(NSID.requestPlcToken), {
      did: account.did,
      transferId,
    })
    expect(resend).toMatchObject({ status: 403, body: { error: 'TransferNotAuthorized' } })
    const exportRes = await postExport(source.url, without(NSID.exportAccount), {
      did: account.did,
      transferId: createTransferId(),
      algorithm: 'HPKE-3',
      encryptionKey: keyHost.keys[0],
    })
    expect(exportRes.statusCode).toBe(403)
    expect(((await exportRes.body.json()) as { error: string }).error).toBe('TransferNotAuthorized')
    await stillActive(account)
  })

  it('another OAuth client holding a full token for the same account cannot complete the transfer', async () => {
    const { account, transferId, code } = await exported()
    const other = source.auth.issue({ did: account.did, clientId: keyHost.clientId }, ALL)
    const res = await call(NSID.completeTransfer, other, await completeInput(account, transferId, code))
    expect(res).toMatchObject({ status: 404, body: { error: 'TransferNotFound' } })
    await stillActive(account)
    // And the code was not spent: the rightful destination still finishes with it.
    const done = await dest.engine.complete(transferId, { plcToken: code })
    expect(done).toMatchObject({ status: 'completed', stage: 'activated' })
  })

  it('completeTransfer for a transfer whose export has not finished is refused', async () => {
    const account = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts: 300, blobSizes: [400_000, 400_000] },
    })
    const token = source.auth.issue({ did: account.did, clientId: keyHost.clientId }, ALL)
    const transferId = createTransferId()
    const stream = await postExport(source.url, token, {
      did: account.did,
      transferId,
      algorithm: 'HPKE-3',
      encryptionKey: keyHost.keys[0],
    })
    expect(stream.statusCode).toBe(200)
    // The stream is open and unread: the export is still running.
    await source.store.requestPlcToken(account.did)
    const code = source.store.outbox.filter((m) => m.did === account.did).at(-1)?.token as string
    const res = await call(NSID.completeTransfer, token, {
      did: account.did,
      transferId,
      plcSignatureToken: code,
      newPdsEndpoint: dest.url,
      newSigningKey: account.signingKey.did(),
      newRotationKeys: [account.recoveryKey.did(), source.rotationKey.did()],
    })
    await stream.body.destroy()
    expect(res).toMatchObject({ status: 404, body: { error: 'TransferNotFound' } })
    expect(res.body.message).toMatch(/no finished export/)
    expect((await source.store.getAccount(account.did))?.status).toBe('active')
  })
})
