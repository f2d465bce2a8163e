import { readCarWithRoot, verifyRepoCar } from '@atproto/repo'
import {
  CONTENT_TYPE,
  generateTransferKey,
  NSID,
  publicJwk,
  type TransferPrivateJwk,
} from '@pds-transfer/core'
import { bearerSourceClient } from '@pds-transfer/destination'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount, SAMPLE_PREFERENCES } from '../src/fixtures/build-account.ts'
import { exportAndDecode, postExport } from '../src/harness/export-client.ts'
import { type KeyHost, startKeyHost } from '../src/harness/key-host.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import { type CheckResult, runChecks, type SourceTarget, sourceChecks } from '../src/suite/index.ts'

const ALL = [NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus]
const uuidv7 = () => {
  const b = crypto.getRandomValues(new Uint8Array(16))
  const ms = BigInt(Date.now())
  for (let i = 0; i < 6; i++) b[i] = Number((ms >> BigInt(8 * (5 - i))) & 0xffn)
  b[6] = (b[6]! & 0x0f) | 0x70
  b[8] = (b[8]! & 0x3f) | 0x80
  const h = Buffer.from(b).toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

describe('source plugin over HTTP', () => {
  let source: SourceServer
  let host: KeyHost
  let key: TransferPrivateJwk
  let account: FixtureAccount

  beforeAll(async () => {
    source = await startSourceServer({ blobpackTarget: 256 * 1024 })
    key = generateTransferKey({ alg: 'HPKE-3', exp: Math.floor(Date.now() / 1000) + 86400 })
    host = await startKeyHost([publicJwk(key)])
    account = await buildAccount(source.store, {
      plcUrl: source.plc.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: {
        posts: 1200,
        blobSizes: [...Array.from({ length: 30 }, (_, i) => 20_000 + i * 997), 1_500_000],
      },
    })
  }, 120_000)

  afterAll(async () => {
    await host?.close()
    await source?.close()
  })

  const token = (did = account.did, nsids = ALL, clientId = host.clientId) =>
    source.auth.issue({ did, clientId }, nsids)

  /** Runs named conformance checks against this source (the same code as `pds-transfer-conformance`). */
  async function checks(...ids: string[]) {
    const target: SourceTarget = {
      url: source.url,
      did: account.did,
      client: bearerSourceClient(source.url, token()),
      recipientKey: key,
      plcUrl: source.plc.url,
    }
    const results = await runChecks(sourceChecks, target, { only: ids })
    expect(results.map((r) => r.id)).toEqual(ids)
    return results
  }
  const failures = (results: CheckResult[]) =>
    results.filter((r) => r.status !== 'pass').map((r) => r.evidence)

  it('well-known document describes the source', async () => {
    expect(failures(await checks('source.well-known.document', 'source.well-known.cache-control'))).toEqual(
      [],
    )
    const doc = (await (await request(`${source.url}/.well-known/atproto-transfer`)).body.json()) as {
      did: string
    }
    expect(doc.did).toBe(source.serviceDid)
  })

  it('streams a real signed repo and every blob; an independent decoder verifies all of it', async () => {
    const transferId = uuidv7()
    const out = await exportAndDecode(source.url, token(), account.did, transferId, key)
    expect(out.contentTypes[0]).toBe(CONTENT_TYPE.repoCar)
    expect(out.contentTypes.filter((t) => t === CONTENT_TYPE.blobpack).length).toBeGreaterThan(1)
    expect(out.contentTypes.slice(-2)).toEqual([CONTENT_TYPE.preferences, CONTENT_TYPE.accountState])

    const repo = await verifyRepoCar(out.car, account.did, account.signingKey.did())
    expect(repo.creates.length).toBe(1200)
    const { root } = await readCarWithRoot(out.car)
    expect(root.toString()).toBe(
      await source.store.snapshotRepo(account.did).then(async (s) => {
        await s.release()
        return s.commitCid
      }),
    )

    expect(out.blobs.size).toBe(account.blobs.size)
    for (const [cid, bytes] of account.blobs) expect(Buffer.compare(out.blobs.get(cid)!, bytes)).toBe(0)
    expect(out.preferences).toEqual(SAMPLE_PREFERENCES)
    expect(out.state?.state.email).toBe(`${account.handle}@example.com`)

    const status = await request(`${source.url}/xrpc/${NSID.getTransferStatus}?transferId=${transferId}`, {
      headers: { authorization: `Bearer ${token()}` },
    })
    // D10: the source's progress counts what left it, in the proposal's field names.
    expect(await status.body.json()).toMatchObject({
      transferId,
      did: account.did,
      status: 'importing',
      progress: { framesReceived: out.contentTypes.length, blobsReceived: account.blobs.size },
    })
    expect(source.store.outbox.filter((m) => m.did === account.did)).toHaveLength(1)
  })

  it('refuses an encryption key the destination does not publish', async () => {
    expect(failures(await checks('source.auth.key-binding'))).toEqual([])
  })

  it('answers 401 with WWW-Authenticate without a token, 403 for another account or a missing scope', async () => {
    const [noToken, other] = await checks('source.auth.no-token', 'source.auth.other-account')
    expect(noToken?.evidence).toMatch(/^HTTP 401 TransferNotAuthorized.*WWW-Authenticate/)
    expect(other?.evidence).toMatch(/^HTTP 403 TransferNotAuthorized/)
    // A token without the exportAccount scope: only an authorization server can mint one.
    const noScope = await postExport(source.url, token(account.did, [NSID.getTransferStatus]), {
      did: account.did,
      transferId: uuidv7(),
      algorithm: 'HPKE-3',
      encryptionKey: publicJwk(key),
    })
    expect(noScope.statusCode).toBe(403)
    await noScope.body.dump()
  })

  it('rejects malformed input with InvalidRequest and changes nothing', async () => {
    const before = await source.transfers.findActive(account.did)
    const cases: [unknown, RegExp][] = [
      [
        { did: account.did, transferId: 'not-a-uuid', algorithm: 'HPKE-3', encryptionKey: publicJwk(key) },
        /transferId/,
      ],
      [
        {
          did: account.did,
          transferId: '0195c8a2-7e28-4def-8c56-3a8b69e2d471',
          algorithm: 'HPKE-3',
          encryptionKey: publicJwk(key),
        },
        /transferId/,
      ],
      [
        { did: account.did, transferId: uuidv7(), algorithm: 'HPKE-9', encryptionKey: publicJwk(key) },
        /algorithm/,
      ],
      [
        {
          did: account.did,
          transferId: uuidv7(),
          algorithm: 'HPKE-3',
          encryptionKey: { ...publicJwk(key), crv: 'P-256' },
        },
        /crv|X25519/,
      ],
      [
        {
          did: account.did,
          transferId: uuidv7(),
          algorithm: 'HPKE-3',
          encryptionKey: { ...publicJwk(key), exp: 1000 },
        },
        /expired|exp/,
      ],
      [{ did: account.did, transferId: uuidv7(), algorithm: 'HPKE-3' }, /encryptionKey/],
    ]
    for (const [body, message] of cases) {
      const res = await request(`${source.url}/xrpc/${NSID.exportAccount}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token()}` },
        body: JSON.stringify(body),
      })
      expect(res.statusCode).toBe(400)
      const err = (await res.body.json()) as { error: string; message: string }
      expect(err.error).toBe('InvalidRequest')
      expect(err.message).toMatch(message)
    }
    const malformed = await request(`${source.url}/xrpc/${NSID.exportAccount}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token()}` },
      body: '{"did": ',
    })
    expect(malformed.statusCode).toBe(400)
    expect(await malformed.body.json()).toMatchObject({ error: 'InvalidRequest' })
    expect(await source.transfers.findActive(account.did)).toEqual(before)
  })

  it('AccountNotFound for a DID it does not host', async () => {
    const did = 'did:plc:notherenothere0000000000'
    const res = await postExport(source.url, token(did), {
      did,
      transferId: uuidv7(),
      algorithm: 'HPKE-3',
      encryptionKey: publicJwk(key),
    })
    expect(res.statusCode).toBe(404)
    expect(await res.body.json()).toMatchObject({ error: 'AccountNotFound' })
  })
})
