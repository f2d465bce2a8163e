import { Readable } from 'node:stream'
import { Secp256k1Keypair } from '@atproto/crypto'
import { verifySpaceRepoCar } from '@pds-transfer/core'
import {
  bearerSourceClient,
  ImportFailure,
  importPermissionedUnit,
  type PermissionedDataUnit,
  readPermissionedData,
} from '@pds-transfer/destination'
import type { PermissionedRepoHost } from '@pds-transfer/source'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type SpaceAccount, seedSpaceAccount } from '../src/fixtures/space-account.ts'
import { type SpaceHostServer, startSpaceHostServer } from '../src/harness/space-host-server.ts'
import { SqliteAccountSink } from '../src/store/sqlite-account-sink.ts'
import type { SqliteSpaceStore } from '../src/store/sqlite-space-store.ts'

/**
 * The destination's reader for permissioned data (issue 24's foundation): every permissioned repo
 * of an account, its blobs and the spaces it owns, read from the SQLite test PDS over 0016's
 * methods, verified, committed into another test PDS; tampered repos refused with nothing of them
 * committed. Not yet wired into the transfer engine.
 */
const NO_RETRY = { retry: { attempts: 1, baseDelayMs: 1 } }
let servers: SpaceHostServer[] = []

async function server(wrapHost?: (host: PermissionedRepoHost) => PermissionedRepoHost) {
  const s = await startSpaceHostServer({ ...(wrapHost && { wrapHost }) })
  servers.push(s)
  return s
}

beforeEach(() => {
  servers = []
})
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()))
})

/** Reads alice's permissioned data and commits each unit into `sink` as it comes. */
async function move(alice: SpaceAccount, destination: SpaceHostServer): Promise<PermissionedDataUnit[]> {
  const units: PermissionedDataUnit[] = []
  for await (const unit of readPermissionedData({
    client: alice.client,
    did: alice.did,
    signingKey: alice.key.did(),
    blobs: new SqliteAccountSink(destination.accounts),
    limits: NO_RETRY,
  })) {
    await importPermissionedUnit(destination.spaces, alice.did, unit)
    units.push(unit)
  }
  return units
}

async function blobBytes(store: SqliteSpaceStore, space: string, did: string, cid: string): Promise<Buffer> {
  const blob = await store.openBlob(space, did, cid)
  if (!blob) throw new Error(`no blob ${cid}`)
  const chunks: Uint8Array[] = []
  for await (const chunk of blob.bytes) chunks.push(chunk)
  return Buffer.concat(chunks)
}

describe('readPermissionedData', () => {
  it('moves every permissioned record, blob, member and setting identically', async () => {
    const source = await server()
    const destination = await server()
    const alice = await seedSpaceAccount(source)
    const units = await move(alice, destination)
    expect(units.map((u) => u.kind)).toEqual([
      'space-repo',
      'space-blob',
      'simplespace',
      'space-repo',
      'space-repo',
    ])
    for (const space of [alice.owned, ...alice.joined]) {
      const before = await source.spaces.readRepo(space, alice.did)
      const after = await destination.spaces.readRepo(space, alice.did)
      expect(after?.rev).toBe(before?.rev)
      expect(Buffer.from(after?.hash ?? [])).toEqual(Buffer.from(before?.hash ?? [1]))
      const norm = (r: typeof before) =>
        (r?.records ?? [])
          .map((x) => ({ ...x, bytes: Buffer.from(x.bytes) }))
          .sort((a, b) => (a.cid < b.cid ? -1 : 1))
      expect(norm(after)).toEqual(norm(before))
      const blobs = (await source.spaces.listBlobs(space, alice.did, { limit: 100 }))?.cids ?? []
      expect((await destination.spaces.listBlobs(space, alice.did, { limit: 100 }))?.cids).toEqual(blobs)
      for (const cid of blobs)
        expect(await blobBytes(destination.spaces, space, alice.did, cid)).toEqual(
          await blobBytes(source.spaces, space, alice.did, cid),
        )
    }
    expect(await destination.spaces.getSpace(alice.owned)).toEqual(await source.spaces.getSpace(alice.owned))
    expect((await destination.spaces.listMembers(alice.owned, { limit: 100 }))?.members).toEqual(
      alice.members,
    )
    // Only the space alice is the authority of is re-hosted; the others' authorities stay theirs.
    for (const space of alice.joined) expect(await destination.spaces.getSpace(space)).toBeUndefined()
  })

  it('the new host serves the moved repos, signed with the key the DID names after the move', async () => {
    const source = await server()
    const destination = await server()
    const alice = await seedSpaceAccount(source)
    await move(alice, destination)
    await destination.accounts.createAccount({ did: alice.did, signingKey: await Secp256k1Keypair.create() })
    const newKey = await Secp256k1Keypair.create()
    destination.spaces.setSigningKey(alice.did, newKey)
    const client = bearerSourceClient(
      destination.url,
      destination.auth.issue({ did: alice.did, scopes: ['space:*?authority=*&action=read_self'] }),
    )
    const res = await client.fetch(
      `/xrpc/com.atproto.space.getRepo?${new URLSearchParams({ space: alice.joined[0], repo: alice.did })}`,
    )
    const car = new Uint8Array(await res.arrayBuffer())
    const repo = await verifySpaceRepoCar(car, {
      space: alice.joined[0],
      author: alice.did,
      didKey: newKey.did(),
    })
    expect(repo.records).toHaveLength(1)
    await expect(
      verifySpaceRepoCar(car, { space: alice.joined[0], author: alice.did, didKey: alice.key.did() }),
    ).rejects.toThrow(/signature/)
  })

  it('moves a space the account owns but never wrote in (listSpaces names it: spec decision 7)', async () => {
    const source = await server()
    const destination = await server()
    const alice = await seedSpaceAccount(source)
    const res = await alice.client.fetch('/xrpc/com.atproto.simplespace.createSpace', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        type: 'com.example.bookmarks',
        skey: 'self',
        policy: { $type: 'com.atproto.simplespace.defs#memberListPolicy' },
        appAccess: { $type: 'com.atproto.simplespace.defs#open' },
      }),
    })
    const { uri } = (await res.json()) as { uri: string }
    const units = await move(alice, destination)
    expect(units.filter((u) => u.kind === 'simplespace').map((u) => u.state.uri)).toContain(uri)
    expect(await destination.spaces.getSpace(uri)).toEqual(await source.spaces.getSpace(uri))
    expect((await destination.spaces.readRepo(uri, alice.did))?.records).toEqual([])
  })

  it("keeps each repo's rev; the new host's next write comes after it (spec decision 2)", async () => {
    const source = await server()
    const destination = await server()
    const alice = await seedSpaceAccount(source)
    await move(alice, destination)
    const moved = (await destination.spaces.repoHead(alice.joined[0], alice.did))?.rev as string
    expect(moved).toBe((await source.spaces.repoHead(alice.joined[0], alice.did))?.rev)
    const next = await destination.spaces.writeRecords(alice.did, alice.joined[0], [
      {
        collection: 'com.example.reply',
        rkey: '3lbgkz6qo5c3b',
        record: { $type: 'com.example.reply', text: 'moved' },
      },
    ])
    expect(next > moved).toBe(true)
  })

  it('moving again is idempotent: the sink holds exactly the source after a second pull', async () => {
    const source = await server()
    const destination = await server()
    const alice = await seedSpaceAccount(source)
    await move(alice, destination)
    await source.spaces.writeRecords(alice.did, alice.joined[1], [
      { collection: 'com.example.post', rkey: '3lbgkz6qo5c4a' },
    ])
    await move(alice, destination)
    expect((await destination.spaces.readRepo(alice.joined[1], alice.did))?.records).toEqual([])
    expect((await destination.spaces.listMembers(alice.owned, { limit: 10 }))?.members).toEqual(alice.members)
  })

  /** A source whose host tampers with alice's repo in the first joined space (bob's). */
  const tampering: [
    string,
    (target: string) => (host: PermissionedRepoHost) => PermissionedRepoHost,
    RegExp,
  ][] = [
    [
      "a record's bytes changed under its CID",
      (target) => (host) =>
        wrapRead(host, target, (repo) => ({
          ...repo,
          records: repo.records.map((r) => ({
            ...r,
            bytes: Uint8Array.from([...r.bytes.subarray(0, -1), 0x61]),
          })),
        })),
      /do not hash to its CID/,
    ],
    [
      'a record added outside the signed set hash',
      (target) => (host) =>
        wrapRead(host, target, (repo) => ({
          ...repo,
          records: [
            ...repo.records,
            {
              collection: 'com.example.reply',
              rkey: '3lbgkz6qo5c9z',
              cid: 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm',
              bytes: Uint8Array.from([0xa0]),
            },
          ],
        })),
      /set hash/,
    ],
  ]

  it.each(tampering)('refuses %s, committing nothing of that repo', async (_what, wrap, why) => {
    const probe = await server()
    const spaceOf = (await seedSpaceAccount(probe)).joined[0]
    const source = await server(wrap(spaceOf))
    const destination = await server()
    const alice = await seedSpaceAccount(source)
    const error = await move(alice, destination).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ImportFailure)
    expect(error).toMatchObject({
      reason: 'RepoInvalid',
      message: expect.stringMatching(new RegExp(`${escapeRegExp(alice.joined[0])}.*${why.source}`)),
    })
    expect(await destination.spaces.readRepo(alice.joined[0], alice.did)).toBeUndefined()
    expect(await destination.spaces.readRepo(alice.joined[1], alice.did)).toBeUndefined()
  })

  it('refuses commits signed by a key other than the DID document names', async () => {
    const source = await server()
    const destination = await server()
    const alice = await seedSpaceAccount(source)
    source.spaces.setSigningKey(alice.did, await Secp256k1Keypair.create())
    const error = await move(alice, destination).catch((e: unknown) => e)
    expect(error).toMatchObject({ reason: 'RepoInvalid', message: expect.stringMatching(/signature/) })
    expect(await destination.spaces.readRepo(alice.owned, alice.did)).toBeUndefined()
  })

  it('refuses a blob whose bytes do not hash to its CID', async () => {
    const source = await server((host) => ({
      ...bind(host),
      openBlob: async (space, did, cid) => {
        const blob = await host.openBlob(space, did, cid)
        return blob && { size: 3, bytes: Readable.from([Buffer.from([1, 2, 3])]) }
      },
    }))
    const destination = await server()
    const alice = await seedSpaceAccount(source)
    const error = await move(alice, destination).catch((e: unknown) => e)
    expect(error).toMatchObject({ reason: 'BlobInvalid', message: expect.stringMatching(/do not hash/) })
    // The repo (verified) is held and names the blob; the blob itself is not.
    const [cid] = (await destination.spaces.listBlobs(alice.owned, alice.did, { limit: 10 }))?.cids ?? []
    expect(cid).toBeDefined()
    expect(await destination.spaces.openBlob(alice.owned, alice.did, cid as string)).toBeUndefined()
  })

  it('refuses a listed space that is not a space-ref, and reads a space listed twice once', async () => {
    const bad = await server((host) => ({
      ...bind(host),
      listSpaces: async () => ({ spaces: ['at://alice.test/space/com.example.forum/x'] }),
    }))
    const alice = await seedSpaceAccount(bad)
    const error = await move(alice, await server()).catch((e: unknown) => e)
    expect(error).toMatchObject({
      reason: 'SourceRefused',
      message: expect.stringMatching(/alice\.test.*DID/),
    })
    const twice = await server((host) => ({
      ...bind(host),
      listSpaces: async (did, o) => {
        const page = await host.listSpaces(did, o)
        return { spaces: [...page.spaces, ...page.spaces] }
      },
    }))
    const bob = await seedSpaceAccount(twice)
    const units = await move(bob, await server())
    expect(units.filter((u) => u.kind === 'space-repo')).toHaveLength(3)
  })

  it('names a blob the source cannot give, and moves the rest', async () => {
    const source = await server((host) => ({ ...bind(host), openBlob: async () => undefined }))
    const destination = await server()
    const alice = await seedSpaceAccount(source)
    const units = await move(alice, destination)
    const [cid] = (await source.spaces.listBlobs(alice.owned, alice.did, { limit: 10 }))?.cids ?? []
    expect(units).toContainEqual({
      kind: 'space-blob-missing',
      space: alice.owned,
      cid,
      why: expect.stringMatching(/no such blob/),
    })
    expect(units.filter((u) => u.kind === 'space-repo')).toHaveLength(3)
  })
})

function bind(host: PermissionedRepoHost): PermissionedRepoHost {
  return {
    listSpaces: (...a) => host.listSpaces(...a),
    repoHead: (...a) => host.repoHead(...a),
    readRepo: (...a) => host.readRepo(...a),
    listBlobs: (...a) => host.listBlobs(...a),
    openBlob: (...a) => host.openBlob(...a),
    signer: (...a) => host.signer(...a),
  }
}

type Repo = NonNullable<Awaited<ReturnType<PermissionedRepoHost['readRepo']>>>

function wrapRead(
  host: PermissionedRepoHost,
  target: string,
  change: (repo: Repo) => Repo,
): PermissionedRepoHost {
  return {
    ...bind(host),
    readRepo: async (space, did) => {
      const repo = await host.readRepo(space, did)
      return repo && space === target ? change(repo) : repo
    },
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}
