import { Secp256k1Keypair } from '@atproto/crypto'
import {
  buildAtprotoLoopbackClientMetadata,
  NodeOAuthClient,
  type NodeSavedSession,
  type NodeSavedState,
  type OAuthSession,
  requestLocalLock,
} from '@atproto/oauth-client-node'
import { blocksToCarFile, MemoryBlockstore, Repo, WriteOpAction } from '@atproto/repo'
import { generateTransferKey, NSID, publicJwk, TRANSFER_OAUTH_SCOPE } from '@pds-transfer/core'
import { createTransferId } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { headlessAuthorize } from '../src/harness/headless-oauth.ts'
import { memoryStore } from '../src/harness/memory-store.ts'
import { type ReferencePdsPair, startReferencePdsPair } from '../src/harness/reference-pds.ts'

/** The scope string of 0014 §3.1/§3.3, verbatim: bare `rpc:` permissions, no `atproto`. */
const LITERAL_0014_SCOPE = [
  'rpc:com.atproto.transfer.exportAccount',
  'rpc:com.atproto.transfer.completeTransfer',
  'rpc:com.atproto.transfer.getTransferStatus',
  'rpc:com.atproto.sync.getBlob',
].join(' ')

/**
 * Errata shown on the reference PDS itself (@atproto/pds with its own OAuth provider):
 * what 0014 asks for does not work there as written.
 */
describe('errata on the reference PDS', () => {
  let pair: ReferencePdsPair
  let alice: SeededAccount

  beforeAll(async () => {
    pair = await startReferencePdsPair()
    alice = await seedReferenceAccount(pair.a.url, {
      handle: 'erin.test',
      email: 'erin@example.com',
      password: 'erin-password-1',
      posts: 3,
      images: 0,
      follows: 0,
    })
  }, 120_000)
  afterAll(() => pair?.close())

  /** Signs alice in at A's own authorization server with a loopback client asking for `scope`. */
  async function signIn(scope: string): Promise<OAuthSession> {
    const states = new Map<string, NodeSavedState>()
    const sessions = new Map<string, NodeSavedSession>()
    const client = new NodeOAuthClient({
      clientMetadata: buildAtprotoLoopbackClientMetadata({
        scope: scope as never,
        redirect_uris: ['http://127.0.0.1:9/callback'],
      }),
      stateStore: memoryStore(states),
      sessionStore: memoryStore(sessions),
      requestLock: requestLocalLock,
      allowHttp: true,
      plcDirectoryUrl: pair.plc.url,
    })
    const authorizeUrl = await client.authorize(alice.did, { scope })
    const callback = await headlessAuthorize(authorizeUrl, {
      username: alice.handle,
      password: alice.password,
    })
    const { session } = await client.callback(callback.searchParams)
    return session
  }

  it('erratum E5: the scopes of 0014 §3.3 as written give no access; ours do', async () => {
    // Verbatim, the atproto OAuth client refuses them: every atproto token needs `atproto`.
    await expect(signIn(LITERAL_0014_SCOPE)).rejects.toThrow(/atproto/)

    // With `atproto` added, the provider grants the token but silently drops every bare
    // `rpc:` permission (the permission spec requires `aud`): the destination could not export.
    const literal = await signIn(`atproto ${LITERAL_0014_SCOPE}`)
    expect((await literal.getTokenInfo()).scope).toBe('atproto')
    const refused = await literal.fetchHandler(`/xrpc/${NSID.exportAccount}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(await exportInput(alice.did)),
    })
    expect(refused.status).toBe(403)
    expect(await refused.json()).toMatchObject({
      error: 'TransferNotAuthorized',
      message: expect.stringContaining(`rpc:${NSID.exportAccount}?aud=`),
    })

    // Decision 5: `rpc:<nsid>?aud=…` is granted as asked, one permission per endpoint.
    const ours = await signIn(TRANSFER_OAUTH_SCOPE)
    const granted = (await ours.getTokenInfo()).scope?.split(' ') ?? []
    expect(granted.sort()).toEqual(TRANSFER_OAUTH_SCOPE.split(' ').sort())
  })

  it("erratum E9: the reference importRepo stores a CAR whose commit is neither the account's nor signed by its key", async () => {
    const stranger = await Secp256k1Keypair.create()
    const storage = new MemoryBlockstore()
    const forged = await Repo.create(storage, 'did:plc:notalice0000000000000000', stranger, [
      {
        action: WriteOpAction.Create,
        collection: 'app.bsky.feed.post',
        rkey: '3kforgedpost2',
        record: {
          $type: 'app.bsky.feed.post',
          text: 'never written by alice',
          createdAt: new Date().toISOString(),
        },
      },
    ])
    const car = await blocksToCarFile(forged.cid, storage.blocks)
    const imported = await fetch(`${pair.a.url}/xrpc/com.atproto.repo.importRepo`, {
      method: 'POST',
      headers: { 'content-type': 'application/vnd.ipld.car', authorization: `Bearer ${alice.accessJwt}` },
      body: car,
    })
    expect(imported.status, await imported.clone().text()).toBe(200)
    const got = await fetch(
      `${pair.a.url}/xrpc/com.atproto.repo.getRecord?repo=${alice.did}&collection=app.bsky.feed.post&rkey=3kforgedpost2`,
    )
    expect(got.status).toBe(200)
    expect(((await got.json()) as { value: { text: string } }).value.text).toBe('never written by alice')
    // Our destination verifies DID and signature before anything is stored: the same kind of CAR
    // fails as RepoInvalid in destination-rejects.test.ts ("not signed by the DID key").
  })

  it('E9 (fact): the reference PDS deactivates for an OAuth token only with account:status, which 0014 does not ask for', async () => {
    const ours = await signIn(TRANSFER_OAUTH_SCOPE)
    const res = await ours.fetchHandler('/xrpc/com.atproto.server.deactivateAccount', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    })
    expect(res.status).toBe(403)
    expect(await res.json()).toMatchObject({ message: expect.stringContaining('account:status') })
  })

  it('0015 §8.1: the PLC code cannot be requested with an rpc: scope; the reference PDS wants identity:*', async () => {
    const request = (session: OAuthSession) =>
      session.fetchHandler('/xrpc/com.atproto.identity.requestPlcOperationSignature', { method: 'POST' })
    const rpcOnly = await signIn('atproto rpc:com.atproto.identity.requestPlcOperationSignature?aud=*')
    const refused = await request(rpcOnly)
    expect(refused.status).toBe(403)
    expect(await refused.json()).toMatchObject({ message: expect.stringContaining('identity:*') })
    expect((await request(await signIn('atproto identity:*'))).status).toBe(200)
  })

  it('0015 step 9a: getServiceAuth for createAccount needs rpc:com.atproto.server.createAccount?aud=<destination>', async () => {
    const serviceAuth = (session: OAuthSession) =>
      session.fetchHandler(
        '/xrpc/com.atproto.server.getServiceAuth?aud=did:web:dest.example&lxm=com.atproto.server.createAccount',
      )
    const asWritten = await serviceAuth(await signIn('atproto rpc:com.atproto.server.getServiceAuth?aud=*'))
    expect(asWritten.status).toBe(403)
    expect(await asWritten.json()).toMatchObject({
      message: expect.stringContaining('rpc:com.atproto.server.createAccount?aud=did:web:dest.example'),
    })
    expect(
      (await serviceAuth(await signIn('atproto rpc:com.atproto.server.createAccount?aud=*'))).status,
    ).toBe(200)
  })

  async function exportInput(did: string) {
    const key = generateTransferKey({ alg: 'HPKE-3', exp: Math.floor(Date.now() / 1000) + 3600 })
    return { did, transferId: createTransferId(), algorithm: 'HPKE-3', encryptionKey: publicJwk(key) }
  }
})
