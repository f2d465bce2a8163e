import * as plc from '@did-plc/lib'
import { NSID } from '@pds-transfer/core'
import {
  bearerSourceClient,
  EngineError,
  moveRotationKeys,
  type SourceClient,
} from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import { TRANSFER_SCOPES as SCOPES } from '../src/harness/test-authorizer.ts'

/**
 * Issue 16: completion is a recorded state machine on both sides. A repeated completeTransfer
 * answers the same operation; an answer lost on the way back costs nothing; wrong codes are
 * limited; an account whose move never reached PLC is taken back by its source.
 */
describe('completion survives repeats, lost answers and abandoned moves', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let dest: DestinationServer
  const plcClient = () => new plc.Client(plcDir.url)

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    // Taken back at the first sweep the test runs (the sweep itself is called by the test).
    source = await startSourceServer({ plc: plcDir, reclaimAfterMs: 0 })
    dest = await startDestinationServer({ plc: plcDir, limits: { retry: { attempts: 3, baseDelayMs: 5 } } })
  }, 60_000)

  afterAll(async () => {
    await dest?.close()
    await source?.close()
    await plcDir?.close()
  })

  /** A new account at the source, pulled into the destination and waiting for its code. */
  async function imported(): Promise<{
    account: FixtureAccount
    client: SourceClient
    bearer: string
    transferId: string
    token: () => string
  }> {
    const account = await buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts: 5, blobSizes: [2000, 3000] },
    })
    const bearer = source.auth.issue({ did: account.did, clientId: dest.clientId }, SCOPES)
    const client = bearerSourceClient(source.url, bearer)
    const started = await dest.engine.start({ did: account.did, client })
    const t = await dest.engine.wait(started.transferId)
    expect(t.stage).toBe('awaitingPlcToken')
    const token = () => source.store.outbox.filter((m) => m.did === account.did).at(-1)?.token as string
    return { account, client, bearer, transferId: started.transferId, token }
  }

  async function completeBody(
    account: FixtureAccount,
    transferId: string,
    signingKey: string,
    token: string,
  ) {
    const current = (await plcClient().getDocumentData(account.did)).rotationKeys
    return JSON.stringify({
      did: account.did,
      transferId,
      plcSignatureToken: token,
      newPdsEndpoint: dest.url,
      newSigningKey: signingKey,
      // What the engine asks for: every current key in order, ours last.
      newRotationKeys: moveRotationKeys(current, dest.rotationKey.did()),
    })
  }

  async function callComplete(bearer: string, body: string) {
    const res = await fetch(`${source.url}/xrpc/${NSID.completeTransfer}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
      body,
    })
    return { status: res.status, body: (await res.json()) as Record<string, unknown> }
  }

  it('answers a repeated and a concurrent completeTransfer with the same operation', async () => {
    const { account, bearer, transferId, token } = await imported()
    const t = await dest.engine.get(transferId)
    const body = await completeBody(account, transferId, t?.signingKey as string, token())
    const [a, b] = await Promise.all([callComplete(bearer, body), callComplete(bearer, body)])
    expect(a.status).toBe(200)
    expect(b).toEqual(a)
    // Later, with the code already spent, still the same answer.
    expect(await callComplete(bearer, body)).toEqual(a)
    expect((await source.store.getAccount(account.did))?.status).toBe('deactivated')
    // Another move under the same transfer is refused.
    const other = JSON.parse(body) as Record<string, unknown>
    other.newRotationKeys = [account.recoveryKey.did()]
    const refused = await callComplete(bearer, JSON.stringify(other))
    expect(refused).toMatchObject({ status: 400, body: { error: 'InvalidRequest' } })
    // And the destination finishes with that same operation.
    const done = await dest.engine.complete(transferId, { plcToken: token() })
    expect(done.failure).toBeUndefined()
    expect(done).toMatchObject({ status: 'completed', stage: 'activated' })
    expect(done.plcOperation?.sig).toBe((a.body.signedPlcOperation as { sig: string }).sig)
  })

  it('finishes when the answer to completeTransfer is lost on the way back', async () => {
    const { account, client, transferId, token } = await imported()
    let lost = 0
    // The request reaches the source and is carried out; the connection breaks before the answer.
    const lossy: SourceClient = {
      url: client.url,
      async fetch(path, init) {
        const res = await client.fetch(path, init)
        if (path.includes(NSID.completeTransfer) && lost++ === 0) {
          await res.body?.cancel()
          throw new TypeError('fetch failed')
        }
        return res
      },
    }
    const done = await dest.engine.complete(transferId, { plcToken: token(), client: lossy })
    expect(lost).toBe(2)
    expect(done).toMatchObject({ status: 'completed', stage: 'activated' })
    expect((await plcClient().getDocumentData(account.did)).services.atproto_pds?.endpoint).toBe(dest.url)
    expect(await dest.sink.isActive(account.did)).toBe(true)
  })

  it('returns to the code step, named, when the source stops answering during completion', async () => {
    const { account, client, transferId, token } = await imported()
    const code = token()
    const gone: SourceClient = {
      url: client.url,
      async fetch(path, init) {
        if (path.includes(NSID.completeTransfer)) {
          // Carried out at the source, then the source vanishes for every retry.
          await (await client.fetch(path, init)).body?.cancel()
          throw new TypeError('fetch failed')
        }
        return client.fetch(path, init)
      },
    }
    const err = await dest.engine.complete(transferId, { plcToken: code, client: gone }).catch((e) => e)
    expect(err).toBeInstanceOf(EngineError)
    expect(err.code).toBe('SourceUnreachable')
    const waiting = await dest.engine.get(transferId)
    expect(waiting).toMatchObject({
      status: 'importing',
      stage: 'awaitingPlcToken',
      failure: { reason: 'SourceUnreachable' },
    })
    expect(waiting?.completion).toBeUndefined()
    // The user's next action works: "email me a new code", or the same code again.
    await dest.engine.requestPlcToken(transferId)
    expect(token()).not.toBe(code)
    const done = await dest.engine.complete(transferId, { plcToken: code, client })
    expect(done).toMatchObject({ status: 'completed', stage: 'activated' })
    expect((await plcClient().getDocumentData(account.did)).services.atproto_pds?.endpoint).toBe(dest.url)
  })

  it('limits wrong codes per transfer until a new code is sent', async () => {
    const { account, bearer, transferId, token } = await imported()
    const t = await dest.engine.get(transferId)
    const wrong = await completeBody(account, transferId, t?.signingKey as string, 'WRONG-CODE')
    for (let i = 0; i < 5; i++) {
      expect(await callComplete(bearer, wrong)).toMatchObject({
        status: 400,
        body: { error: 'InvalidPlcToken' },
      })
    }
    const right = await completeBody(account, transferId, t?.signingKey as string, token())
    expect(await callComplete(bearer, right)).toMatchObject({
      status: 429,
      body: { error: 'RateLimitExceeded' },
    })
    expect((await source.store.getAccount(account.did))?.status).toBe('active')
    await dest.engine.requestPlcToken(transferId)
    const done = await dest.engine.complete(transferId, { plcToken: token() })
    expect(done.status).toBe('completed')
  })

  it('takes back an account whose signed move never reached PLC, and the move can no longer land', async () => {
    const { account, bearer, transferId, token } = await imported()
    const t = await dest.engine.get(transferId)
    const answer = await callComplete(
      bearer,
      await completeBody(account, transferId, t?.signingKey as string, token()),
    )
    expect(answer.status).toBe(200)
    expect((await source.store.getAccount(account.did))?.status).toBe('deactivated')
    const reclaimed = await (
      source.app as unknown as { reclaimAbandonedTransfers(): Promise<unknown[]> }
    ).reclaimAbandonedTransfers()
    expect(reclaimed).toHaveLength(1)
    expect((await source.store.getAccount(account.did))?.status).toBe('active')
    // PLC still names the source, and the signed move is now a refused fork.
    const directory = plcClient()
    expect((await directory.getDocumentData(account.did)).services.atproto_pds?.endpoint).toBe(source.url)
    await expect(
      directory.sendOperation(account.did, answer.body.signedPlcOperation as plc.Operation),
    ).rejects.toThrow()
    expect((await directory.getDocumentData(account.did)).services.atproto_pds?.endpoint).toBe(source.url)
    // The transfer is back at the code step on the source: a new code completes it.
    expect((await source.transfers.get(transferId))?.status).toBe('importing')
  })

  it('marks a move that did land as settled and leaves the account deactivated', async () => {
    const { account, transferId, token } = await imported()
    await dest.engine.complete(transferId, { plcToken: token() })
    const reclaimed = await (
      source.app as unknown as { reclaimAbandonedTransfers(): Promise<unknown[]> }
    ).reclaimAbandonedTransfers()
    expect(reclaimed).toEqual([])
    expect((await source.store.getAccount(account.did))?.status).toBe('deactivated')
    expect((await source.transfers.get(transferId))?.completion?.settledAt).toEqual(expect.any(Number))
  })
})
