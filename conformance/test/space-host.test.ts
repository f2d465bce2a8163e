import { Secp256k1Keypair } from '@atproto/crypto'
import { jsonToLex } from '@atproto/lex-json'
import {
  checkSpaceCommit,
  type SignedSpaceCommit,
  SPACE_MIGRATION_SCOPE,
  verifySpaceRepoCar,
} from '@pds-transfer/core'
import { bearerSourceClient, type SourceClient } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SpaceAccount, seedSpaceAccount } from '../src/fixtures/space-account.ts'
import { type SpaceHostServer, startSpaceHostServer } from '../src/harness/space-host-server.ts'

/**
 * The SQLite test PDS's proposal 0016 methods: the repo-host reads a move uses and simplespace
 * management, with the `space:` scopes 0016 defines (OAuth stand-in tokens carry them).
 */
let server: SpaceHostServer
let alice: SpaceAccount

beforeAll(async () => {
  server = await startSpaceHostServer()
  alice = await seedSpaceAccount(server)
})
afterAll(() => server?.close())

async function get(client: SourceClient, nsid: string, params: Record<string, string>) {
  const res = await client.fetch(`/xrpc/${nsid}?${new URLSearchParams(params)}`)
  const type = res.headers.get('content-type') ?? ''
  const body = type.startsWith('application/json')
    ? await res.json()
    : new Uint8Array(await res.arrayBuffer())
  return { status: res.status, body: body as Record<string, unknown> & Uint8Array }
}

async function post(client: SourceClient, nsid: string, input: unknown) {
  const res = await client.fetch(`/xrpc/${nsid}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(input),
  })
  const text = await res.text()
  return { status: res.status, body: (text ? JSON.parse(text) : {}) as Record<string, unknown> }
}

function as(did: string, scopes: string[]): SourceClient {
  return bearerSourceClient(server.url, server.auth.issue({ did, scopes }))
}

describe('com.atproto.space.* reads', () => {
  it('listSpaces names the owned space and the two joined ones', async () => {
    const { status, body } = await get(alice.client, 'com.atproto.space.listSpaces', {})
    expect(status).toBe(200)
    expect((body.spaces as { uri: string }[]).map((s) => s.uri).sort()).toEqual(
      [alice.owned, ...alice.joined].sort(),
    )
    const filtered = await get(alice.client, 'com.atproto.space.listSpaces', { type: 'com.example.group' })
    expect(filtered.body.spaces).toEqual([{ uri: alice.joined[1] }])
  })

  it('listSpaces pages with a cursor', async () => {
    const first = await get(alice.client, 'com.atproto.space.listSpaces', { limit: '2' })
    expect(first.body.spaces).toHaveLength(2)
    const rest = await get(alice.client, 'com.atproto.space.listSpaces', {
      limit: '2',
      cursor: String(first.body.cursor),
    })
    expect(rest.body.spaces).toHaveLength(1)
    expect(rest.body.cursor).toBeUndefined()
  })

  it('getLatestCommit is a fresh commit per read that verifies with the account key', async () => {
    const a = await get(alice.client, 'com.atproto.space.getLatestCommit', {
      space: alice.joined[0],
      repo: alice.did,
    })
    const b = await get(alice.client, 'com.atproto.space.getLatestCommit', {
      space: alice.joined[0],
      repo: alice.did,
    })
    const commit = jsonToLex(a.body.commit as never) as unknown as SignedSpaceCommit
    const again = jsonToLex(b.body.commit as never) as unknown as SignedSpaceCommit
    expect(Buffer.from(commit.ikm)).not.toEqual(Buffer.from(again.ikm))
    const context = { space: alice.joined[0], author: alice.did, rev: commit.rev }
    expect(await checkSpaceCommit(commit, context, alice.key.did())).toBeUndefined()
    expect(Buffer.from(commit.hash)).toEqual(Buffer.from(again.hash))
  })

  it('getRepo is a CAR that verifies per 0016, with the records written (a deleted one gone)', async () => {
    const { status, body } = await get(alice.client, 'com.atproto.space.getRepo', {
      space: alice.joined[1],
      repo: alice.did,
    })
    expect(status).toBe(200)
    const repo = await verifySpaceRepoCar(body, {
      space: alice.joined[1],
      author: alice.did,
      didKey: alice.key.did(),
    })
    expect(repo.records.map((r) => `${r.collection}/${r.rkey}`)).toEqual(['com.example.post/3lbgkz6qo5c4a'])
  })

  it('listBlobs and getBlob serve the blob a record of the repo references, and nothing else', async () => {
    const { body } = await get(alice.client, 'com.atproto.space.listBlobs', {
      space: alice.owned,
      repo: alice.did,
    })
    const cids = body.cids as string[]
    expect(cids).toHaveLength(1)
    const blob = await get(alice.client, 'com.atproto.space.getBlob', {
      space: alice.owned,
      repo: alice.did,
      cid: cids[0] as string,
    })
    expect(blob.status).toBe(200)
    expect(blob.body.length).toBeGreaterThan(0)
    const elsewhere = await get(alice.client, 'com.atproto.space.getBlob', {
      space: alice.joined[0],
      repo: alice.did,
      cid: cids[0] as string,
    })
    expect(elsewhere).toMatchObject({ status: 404, body: { error: 'BlobNotFound' } })
  })

  it('keeps a blob only permissioned records reference out of the public reads (sync.getBlob, the v1 stream)', async () => {
    const { body } = await get(alice.client, 'com.atproto.space.listBlobs', {
      space: alice.owned,
      repo: alice.did,
    })
    const spaceBlob = (body.cids as string[])[0] as string
    expect(await server.accounts.openBlob(alice.did, spaceBlob)).toBeUndefined()
    // A blob no permissioned record references is served as before.
    const publicBlob = await server.accounts.putBlob(alice.did, new TextEncoder().encode('a public file'))
    expect(await server.accounts.openBlob(alice.did, publicBlob.toString())).toBeDefined()
  })

  it("refuses without a token, without a covering scope, and for another account's repo", async () => {
    const anon = bearerSourceClient(server.url, 'nope')
    expect(await get(anon, 'com.atproto.space.listSpaces', {})).toMatchObject({
      status: 401,
      body: { error: 'AuthenticationRequired' },
    })
    const selfOnly = as(alice.did, ['space:*'])
    // authority defaults to self: a joined space (another authority) is not covered.
    expect(
      await get(selfOnly, 'com.atproto.space.getRepo', { space: alice.joined[0], repo: alice.did }),
    ).toMatchObject({
      status: 403,
      body: { error: 'InsufficientScope' },
    })
    expect(await get(selfOnly, 'com.atproto.space.listSpaces', {})).toMatchObject({ status: 403 })
    expect(
      await get(selfOnly, 'com.atproto.space.getRepo', { space: alice.owned, repo: alice.did }),
    ).toMatchObject({
      status: 200,
    })
    const bob = as('did:plc:bobbobbobbobbobbobbobbobb', [SPACE_MIGRATION_SCOPE])
    expect(
      await get(bob, 'com.atproto.space.getRepo', { space: alice.joined[0], repo: alice.did }),
    ).toMatchObject({
      status: 403,
      body: { error: 'InsufficientScope' },
    })
  })

  it('answers RepoNotFound for a space the account holds no repo in, InvalidRequest for a bad space-ref', async () => {
    const none = 'at://did:plc:davedavedavedavedavedaved/space/com.example.forum/x'
    expect(
      await get(alice.client, 'com.atproto.space.getRepo', { space: none, repo: alice.did }),
    ).toMatchObject({
      status: 404,
      body: { error: 'RepoNotFound' },
    })
    expect(
      await get(alice.client, 'com.atproto.space.getRepo', {
        space: 'at://alice.test/space/x.y.z/k',
        repo: alice.did,
      }),
    ).toMatchObject({ status: 400, body: { error: 'InvalidRequest', message: expect.stringMatching(/DID/) } })
  })
})

describe('com.atproto.simplespace.* management', () => {
  it('getSpace and listMembers give the configuration and member list as set', async () => {
    const space = await get(alice.client, 'com.atproto.simplespace.getSpace', { space: alice.owned })
    expect(space.body).toEqual({
      uri: alice.owned,
      policy: { $type: 'com.atproto.simplespace.defs#memberListPolicy' },
      appAccess: { $type: 'com.atproto.simplespace.defs#allowList', allowed: alice.allowed },
    })
    const members = await get(alice.client, 'com.atproto.simplespace.listMembers', { space: alice.owned })
    expect(members.body.members).toEqual(alice.members.map((did) => ({ did })))
  })

  it('a member reads the space; a stranger is told it does not exist', async () => {
    const bob = as(alice.members[0] as string, ['space:*?authority=*&action=read_self'])
    expect(await get(bob, 'com.atproto.simplespace.getSpace', { space: alice.owned })).toMatchObject({
      status: 200,
    })
    const dave = as('did:plc:davedavedavedavedavedaved', ['space:*?authority=*&action=read_self'])
    expect(await get(dave, 'com.atproto.simplespace.getSpace', { space: alice.owned })).toMatchObject({
      status: 404,
      body: { error: 'SpaceNotFound' },
    })
  })

  it('update, add and remove need manage=update and the owner; create refuses a duplicate', async () => {
    const readOnly = as(alice.did, [SPACE_MIGRATION_SCOPE])
    expect(
      await post(readOnly, 'com.atproto.simplespace.addMember', { space: alice.owned, did: 'did:plc:x' }),
    ).toMatchObject({
      status: 403,
      body: { error: 'InsufficientScope' },
    })
    const bobManager = as(alice.members[0] as string, ['space:*?authority=*&manage=update'])
    expect(
      await post(bobManager, 'com.atproto.simplespace.addMember', { space: alice.owned, did: 'did:plc:x' }),
    ).toMatchObject({ status: 403, body: { error: 'NotSpaceOwner' } })
    expect(
      await post(alice.client, 'com.atproto.simplespace.createSpace', {
        type: 'com.example.forum',
        skey: 'book-club',
        policy: { $type: 'com.atproto.simplespace.defs#publicPolicy' },
        appAccess: { $type: 'com.atproto.simplespace.defs#open' },
      }),
    ).toMatchObject({ status: 409, body: { error: 'SpaceAlreadyExists' } })
  })

  it('refuses a policy it does not enforce (managingApp) rather than storing it', async () => {
    const res = await post(alice.client, 'com.atproto.simplespace.createSpace', {
      type: 'com.example.forum',
      policy: {
        $type: 'com.atproto.simplespace.defs#managingAppPolicy',
        managingApp: 'did:web:app.example#forum',
      },
      appAccess: { $type: 'com.atproto.simplespace.defs#open' },
    })
    expect(res).toMatchObject({ status: 400, body: { error: 'UnsupportedPolicy' } })
  })

  it('a created, updated space round-trips; removeMember takes a member off', async () => {
    const carol = 'did:plc:carolcarolcarolcarolcaro'
    const created = await post(alice.client, 'com.atproto.simplespace.createSpace', {
      type: 'com.example.bookmarks',
      policy: { $type: 'com.atproto.simplespace.defs#memberListPolicy' },
      appAccess: { $type: 'com.atproto.simplespace.defs#open' },
    })
    expect(created.status).toBe(200)
    const uri = String(created.body.uri)
    expect(uri).toMatch(new RegExp(`^at://${alice.did}/space/com\\.example\\.bookmarks/[a-z2-7]{13}$`))
    await post(alice.client, 'com.atproto.simplespace.addMember', { space: uri, did: carol })
    await post(alice.client, 'com.atproto.simplespace.updateSpace', {
      space: uri,
      policy: { $type: 'com.atproto.simplespace.defs#publicPolicy' },
    })
    expect((await get(alice.client, 'com.atproto.simplespace.getSpace', { space: uri })).body).toMatchObject({
      policy: { $type: 'com.atproto.simplespace.defs#publicPolicy' },
      appAccess: { $type: 'com.atproto.simplespace.defs#open' },
    })
    await post(alice.client, 'com.atproto.simplespace.removeMember', { space: uri, did: carol })
    expect(
      (await get(alice.client, 'com.atproto.simplespace.listMembers', { space: uri })).body.members,
    ).toEqual([])
  })

  it('a new key cannot sign for the account: commits verify only with the account key', async () => {
    const other = await Secp256k1Keypair.create()
    const { body } = await get(alice.client, 'com.atproto.space.getRepo', {
      space: alice.owned,
      repo: alice.did,
    })
    await expect(
      verifySpaceRepoCar(body, { space: alice.owned, author: alice.did, didKey: other.did() }),
    ).rejects.toThrow(/signature/)
  })
})
