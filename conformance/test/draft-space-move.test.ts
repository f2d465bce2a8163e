import { Secp256k1Keypair } from '@atproto/crypto'
import { SPACE_MIGRATION_SCOPE } from '@pds-transfer/core'
import { bearerSourceClient, createTransferId, type SourceClient } from '@pds-transfer/destination'
import type { PermissionedRepoHost } from '@pds-transfer/source'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount } from '../src/fixtures/build-account.ts'
import { seedSpaceAccount } from '../src/fixtures/space-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import { SQLITE_SYNC_GRANTS } from '../src/harness/sqlite-sync-routes.ts'
import { TRANSFER_SCOPES } from '../src/harness/test-authorizer.ts'
import type { SqliteSpaceStore } from '../src/store/sqlite-space-store.ts'
import { expectSameSpaces } from './same-spaces.ts'

/** The space of another authority (bob's) that `seedSpaceAccount` writes in first. */
const BOBS_SPACE = 'at://did:plc:bobbobbobbobbobbobbobbobb/space/com.example.forum/default'

/**
 * Issue 24 in a real draft move: the SQLite test PDS serving the current draft and proposal 0016's
 * methods moves an account that owns a space (members, an app allow-list) and writes in two others
 * to a destination with the SQLite sink. `permissioned-data` is negotiated (spec/dialect-draft.md
 * §3); every permissioned record, blob, member and setting arrives identical and the move
 * completes; a tampered permissioned repo fails the pull `RepoInvalid` with nothing of it held.
 */
describe('a draft move carries the permissioned data', () => {
  let plc: PlcDirectory
  const servers: { close(): Promise<void> }[] = []

  beforeAll(async () => {
    plc = await startPlcDirectory()
  }, 60_000)
  afterAll(async () => {
    for (const s of servers.reverse()) await s.close()
    await plc?.close()
  })

  async function source(wrapSpaceHost?: (host: PermissionedRepoHost) => PermissionedRepoHost) {
    const s = await startSourceServer({
      plc: { url: plc.url, close: async () => {} },
      dialects: ['draft'],
      // As a draft source: nothing to discover (spec/dialect-draft.md §2).
      serveWellKnown: false,
      withSpaces: true,
      sync: true,
      ...(wrapSpaceHost && { wrapSpaceHost }),
    })
    servers.push(s)
    return s
  }

  async function destination(spaces = true): Promise<DestinationServer> {
    const d = await startDestinationServer({ plc, spaces })
    servers.push(d)
    return d
  }

  /** An account with public data and `seedSpaceAccount`'s spaces, and the destination's grant at its PDS. */
  async function seeded(on: SourceServer, to: DestinationServer) {
    const account = await buildAccount(on.store, {
      plcUrl: plc.url,
      pdsUrl: on.url,
      pdsRotationKey: on.rotationKey,
      shape: { posts: 3, blobSizes: [1500] },
    })
    const spaces = await seedSpaceAccount(
      { url: on.url, accounts: on.store, spaces: on.spaces as SqliteSpaceStore, auth: on.spaceAuth as never },
      account.did,
      account.signingKey,
    )
    const calls: string[] = []
    const inner = bearerSourceClient(
      on.url,
      on.auth.issue(
        { did: account.did, clientId: to.clientId },
        [...TRANSFER_SCOPES, ...SQLITE_SYNC_GRANTS],
        [SPACE_MIGRATION_SCOPE],
      ),
    )
    const client: SourceClient = {
      url: inner.url,
      fetch: (path, init) => {
        calls.push(path.split('?')[0]?.replace('/xrpc/', '') ?? path)
        return inner.fetch(path, init)
      },
    }
    return { account, spaces, client, calls }
  }

  it('moves every permissioned record, blob, member and setting identically, then completes', async () => {
    const a = await source()
    const b = await destination()
    const { account, spaces: alice, client, calls } = await seeded(a, b)
    const started = await b.engine.start({ did: account.did, client })
    expect(started.dialect).toBe('draft')
    const pulled = await b.engine.wait(started.transferId)
    expect(pulled.failure).toBeUndefined()
    expect(pulled).toMatchObject({
      stage: 'awaitingPlcToken',
      missingBlobs: [],
      capabilities: ['base', 'preferences', 'resumable', 'permissioned-data'],
    })
    // After the preferences, before the code is asked for.
    const at = (nsid: string) => calls.indexOf(nsid)
    expect(at('com.atproto.space.listSpaces')).toBeGreaterThan(at('app.bsky.actor.getPreferences'))
    expect(calls.lastIndexOf('com.atproto.simplespace.listMembers')).toBeLessThan(
      at('com.atproto.identity.requestPlcOperationSignature'),
    )
    await expectSameSpaces(a.spaces as SqliteSpaceStore, b.spaces as SqliteSpaceStore, alice)

    const code = a.store.outbox.filter((m) => m.did === account.did).at(-1)?.token as string
    const done = await b.engine.complete(started.transferId, {
      plcToken: code,
      userRotationKey: (await Secp256k1Keypair.create()).did(),
    })
    expect(done.failure).toBeUndefined()
    expect(done).toMatchObject({ status: 'completed', stage: 'activated' })
    await expectSameSpaces(a.spaces as SqliteSpaceStore, b.spaces as SqliteSpaceStore, alice)
  })

  it('refuses a tampered permissioned repo by name: nothing of it held, no code asked for', async () => {
    const a = await source((host) => ({
      listSpaces: (...args) => host.listSpaces(...args),
      repoHead: (...args) => host.repoHead(...args),
      listBlobs: (...args) => host.listBlobs(...args),
      openBlob: (...args) => host.openBlob(...args),
      signer: (...args) => host.signer(...args),
      // One record's bytes changed under its CID, in bob's space only.
      readRepo: async (space, did) => {
        const repo = await host.readRepo(space, did)
        if (!repo || space !== BOBS_SPACE) return repo
        const records = repo.records.map((r) => ({
          ...r,
          bytes: Uint8Array.from([...r.bytes.subarray(0, -1), 0x61]),
        }))
        return { ...repo, records }
      },
    }))
    const b = await destination()
    const { account, client, calls } = await seeded(a, b)
    const started = await b.engine.start({ did: account.did, client })
    const pulled = await b.engine.wait(started.transferId)
    expect(pulled).toMatchObject({
      status: 'failed',
      failure: {
        reason: 'RepoInvalid',
        message: expect.stringMatching(/did:plc:bobbob.*do not hash to its CID/),
      },
    })
    expect(await b.spaces?.readRepo(BOBS_SPACE, account.did)).toBeUndefined()
    expect(calls).not.toContain('com.atproto.identity.requestPlcOperationSignature')
    expect(a.store.outbox.filter((m) => m.did === account.did)).toEqual([])
  })

  it('a space blob the source cannot give joins the missing blobs the user reviews; the rest moves', async () => {
    const a = await source((host) => ({
      listSpaces: (...args) => host.listSpaces(...args),
      repoHead: (...args) => host.repoHead(...args),
      readRepo: (...args) => host.readRepo(...args),
      listBlobs: (...args) => host.listBlobs(...args),
      signer: (...args) => host.signer(...args),
      openBlob: async () => undefined,
    }))
    const b = await destination()
    const { account, spaces: alice, client } = await seeded(a, b)
    const [cid] = (await a.spaces?.listBlobs(alice.owned, account.did, { limit: 10 }))?.cids ?? []
    expect(cid).toBeDefined()
    const started = await b.engine.start({ did: account.did, client })
    const pulled = await b.engine.wait(started.transferId)
    expect(pulled.failure).toBeUndefined()
    expect(pulled).toMatchObject({
      stage: 'awaitingPlcToken',
      missingBlobs: [cid],
      progress: expect.objectContaining({ blobsMissing: 1 }),
    })
    for (const space of [alice.owned, ...alice.joined])
      expect((await b.spaces?.readRepo(space, account.did))?.rev).toBe(
        (await a.spaces?.readRepo(space, account.did))?.rev,
      )
    await b.engine.cancel(started.transferId)
  })

  it('is not asked for by a destination that cannot import it, nor offered by a source without spaces', async () => {
    const a = await source()
    const b = await destination(false)
    const { account, client, calls } = await seeded(a, b)
    const started = await b.engine.start({ did: account.did, client })
    const pulled = await b.engine.wait(started.transferId)
    expect(pulled).toMatchObject({
      stage: 'awaitingPlcToken',
      capabilities: ['base', 'preferences', 'resumable'],
    })
    expect(calls.filter((c) => c.startsWith('com.atproto.space.'))).toEqual([])
    await b.engine.cancel(started.transferId)

    // Configured to offer it, but serving no 0016 methods: not offered.
    const bare = await startSourceServer({
      plc: { url: plc.url, close: async () => {} },
      dialects: ['draft'],
      draftCapabilities: ['base', 'permissioned-data'],
    })
    servers.push(bare)
    const other = await buildAccount(bare.store, {
      plcUrl: plc.url,
      pdsUrl: bare.url,
      pdsRotationKey: bare.rotationKey,
      shape: { posts: 1, blobSizes: [] },
    })
    const res = await fetch(`${bare.url}/xrpc/com.atproto.transfer.exportAccount`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${bare.auth.issue({ did: other.did, clientId: b.clientId }, TRANSFER_SCOPES)}`,
      },
      body: JSON.stringify({
        did: other.did,
        transferId: createTransferId(),
        capabilities: ['base', 'permissioned-data'],
      }),
    })
    expect(res.status).toBe(200)
    expect(((await res.json()) as { capabilities: string[] }).capabilities).toEqual(['base'])
  })
})
