import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { PLAIN_PDS_OAUTH_SCOPE, SPACE_MIGRATION_SCOPE } from '@pds-transfer/core'
import { bearerSourceClient, type SourceClient } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { transferPage } from '../../packages/destination/src/migrate-transfer-page.ts'
import { plainPdsScope } from '../../packages/destination/src/plain-oauth-scope.ts'
import { buildAccount } from '../src/fixtures/build-account.ts'
import { seedSpaceAccount } from '../src/fixtures/space-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import { SQLITE_SYNC_GRANTS } from '../src/harness/sqlite-sync-routes.ts'
import { TRANSFER_SCOPES } from '../src/harness/test-authorizer.ts'
import type { SqliteSpaceStore } from '../src/store/sqlite-space-store.ts'
import { expectSameSpaces } from './same-spaces.ts'

/**
 * Issue 24 from a plain PDS: the SQLite test PDS serving the sync endpoints and proposal 0016's
 * methods, and no transfer endpoint (no well-known, no draft export: detected as `plain` by the
 * engine's own probes), moves an account with spaces to the destination with the SQLite sink. The
 * destination finds the permissioned data itself by probing `listSpaces` (spec/permissioned-data.md,
 * "From a plain PDS"): served, it moves identical; not served, the move goes on without a word; refused
 * for lack of scope, the public data moves and the transfer record says what stays behind.
 */
describe('a plain move finds and carries the permissioned data', () => {
  let plc: PlcDirectory
  const servers: { close(): Promise<void> }[] = []

  beforeAll(async () => {
    plc = await startPlcDirectory()
  }, 60_000)
  afterAll(async () => {
    for (const s of servers.reverse()) await s.close()
    await plc?.close()
  })

  /** A PDS with nothing of ours: sync endpoints, and 0016's methods when `withSpaces`. */
  async function source(withSpaces: boolean): Promise<SourceServer> {
    const s = await startSourceServer({
      plc: { url: plc.url, close: async () => {} },
      dialects: [],
      serveWellKnown: false,
      withSpaces,
      sync: true,
    })
    servers.push(s)
    return s
  }

  async function destination(): Promise<DestinationServer> {
    const d = await startDestinationServer({ plc, spaces: true })
    servers.push(d)
    return d
  }

  /** An account with public data (and spaces if the source hosts them), and the destination's grant. */
  async function seeded(on: SourceServer, to: DestinationServer, spaceScopes: string[]) {
    const account = await buildAccount(on.store, {
      plcUrl: plc.url,
      pdsUrl: on.url,
      pdsRotationKey: on.rotationKey,
      shape: { posts: 3, blobSizes: [1500] },
    })
    const spaces = on.spaces
      ? await seedSpaceAccount(
          {
            url: on.url,
            accounts: on.store,
            spaces: on.spaces as SqliteSpaceStore,
            auth: on.spaceAuth as never,
          },
          account.did,
          account.signingKey,
        )
      : undefined
    const calls: string[] = []
    const inner = bearerSourceClient(
      on.url,
      on.auth.issue(
        { did: account.did, clientId: to.clientId },
        [...TRANSFER_SCOPES, ...SQLITE_SYNC_GRANTS],
        spaceScopes,
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

  /** The public repo's head at the destination is the source's. */
  async function expectSameRepo(a: SourceServer, b: DestinationServer, did: string, rev?: string) {
    const before = await a.store.snapshotRepo(did)
    await before.release()
    const after = await b.store.snapshotRepo(did)
    await after.release()
    expect(rev).toBe(before.rev)
    expect(after.commitCid).toBe(before.commitCid)
  }

  it('probes listSpaces and moves every permissioned record, blob, member and setting identically', async () => {
    const a = await source(true)
    const b = await destination()
    const { account, spaces: alice, client, calls } = await seeded(a, b, [SPACE_MIGRATION_SCOPE])
    const started = await b.engine.start({ did: account.did, client })
    expect(started.dialect).toBe('plain')
    const pulled = await b.engine.wait(started.transferId)
    expect(pulled.failure).toBeUndefined()
    expect(pulled).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    expect(pulled.notMoved).toBeUndefined()
    await expectSameRepo(a, b, account.did, pulled.repo?.rev)
    // After the preferences and the email, before the code is asked for.
    const at = (nsid: string) => calls.indexOf(nsid)
    expect(at('com.atproto.space.listSpaces')).toBeGreaterThan(at('com.atproto.server.getSession'))
    expect(calls.lastIndexOf('com.atproto.simplespace.listMembers')).toBeLessThan(
      at('com.atproto.identity.requestPlcOperationSignature'),
    )
    expect(at('com.atproto.identity.requestPlcOperationSignature')).toBeGreaterThan(-1)
    await expectSameSpaces(a.spaces as SqliteSpaceStore, b.spaces as SqliteSpaceStore, alice as never)
    await b.engine.cancel(started.transferId)
  })

  it('a source without 0016 methods moves without a word about them', async () => {
    const a = await source(false)
    const b = await destination()
    const { account, client, calls } = await seeded(a, b, [])
    const started = await b.engine.start({ did: account.did, client })
    expect(started.dialect).toBe('plain')
    const pulled = await b.engine.wait(started.transferId)
    expect(pulled.failure).toBeUndefined()
    expect(pulled).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    expect(pulled.notMoved).toBeUndefined()
    await expectSameRepo(a, b, account.did, pulled.repo?.rev)
    // Probed once (a 404), nothing more asked.
    expect(calls.filter((c) => c.startsWith('com.atproto.space.'))).toEqual(['com.atproto.space.listSpaces'])
    expect(calls).toContain('com.atproto.identity.requestPlcOperationSignature')
    await b.engine.cancel(started.transferId)
  })

  it('a source refusing the space scope: the public data moves, the record says what stays behind', async () => {
    const a = await source(true)
    const b = await destination()
    // The grant lacks SPACE_MIGRATION_SCOPE: the source refuses listSpaces (401/403).
    const { account, client, calls } = await seeded(a, b, [])
    const started = await b.engine.start({ did: account.did, client })
    const pulled = await b.engine.wait(started.transferId)
    expect(pulled.failure).toBeUndefined()
    expect(pulled).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    await expectSameRepo(a, b, account.did, pulled.repo?.rev)
    expect(pulled.notMoved).toEqual([
      expect.stringMatching(
        new RegExp(
          `permissioned data.*refused.*${SPACE_MIGRATION_SCOPE.replace(/[?*]/g, '\\$&')}.*stays on your old server`,
        ),
      ),
    ])
    expect(calls.filter((c) => c.startsWith('com.atproto.space.'))).toEqual(['com.atproto.space.listSpaces'])
    const held = (await a.spaces?.listSpaces(account.did, { limit: 10 }))?.spaces ?? []
    expect(held.length).toBe(3)
    for (const space of held) expect(await b.spaces?.readRepo(space, account.did)).toBeUndefined()
    // Shown in /migrate with the code step.
    const page = transferPage(pulled, { origin: b.url, host: '127.0.0.1', canSetPassword: false }, {})
    expect(page).toContain('Not moved:')
    expect(page).toContain('Everything your current server gave has been copied')
    expect(page).toContain(SPACE_MIGRATION_SCOPE.replace('&', '&#38;'))
    await b.engine.cancel(started.transferId)
  })
})

/**
 * The scope asked of a plain PDS's authorization server (spec/dialect-plain-pds.md, "Scopes"):
 * `SPACE_MIGRATION_SCOPE` only when its metadata lists it, or when the operator says always.
 * The PDS here serves its two OAuth metadata documents over loopback HTTP, as a PDS does.
 */
describe('the space scope is asked of a plain PDS only when its server lists it', () => {
  async function pds(scopesSupported: string[] | undefined) {
    const server = createServer((req, res) => {
      const { port } = server.address() as AddressInfo
      const issuer = `http://127.0.0.1:${port}`
      const body =
        req.url === '/.well-known/oauth-protected-resource'
          ? { resource: issuer, authorization_servers: [issuer] }
          : req.url === '/.well-known/oauth-authorization-server'
            ? { issuer, ...(scopesSupported && { scopes_supported: scopesSupported }) }
            : undefined
      res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' }).end(JSON.stringify(body ?? {}))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as AddressInfo
    return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(r)) }
  }

  it('adds it when scopes_supported lists it, not otherwise; the operator may force either way', async () => {
    const listing = await pds(['atproto', 'transition:generic', SPACE_MIGRATION_SCOPE])
    const silent = await pds(['atproto', 'transition:generic'])
    const bare = await pds(undefined)
    try {
      expect(await plainPdsScope(listing.url)).toBe(`${PLAIN_PDS_OAUTH_SCOPE} ${SPACE_MIGRATION_SCOPE}`)
      expect(await plainPdsScope(silent.url)).toBe(PLAIN_PDS_OAUTH_SCOPE)
      expect(await plainPdsScope(bare.url)).toBe(PLAIN_PDS_OAUTH_SCOPE)
      expect(await plainPdsScope(silent.url, 'always')).toBe(
        `${PLAIN_PDS_OAUTH_SCOPE} ${SPACE_MIGRATION_SCOPE}`,
      )
      expect(await plainPdsScope(listing.url, 'never')).toBe(PLAIN_PDS_OAUTH_SCOPE)
      // No metadata at all (nothing listening): not asked, the move goes on.
      expect(await plainPdsScope('http://127.0.0.1:9')).toBe(PLAIN_PDS_OAUTH_SCOPE)
    } finally {
      await listing.close()
      await silent.close()
      await bare.close()
    }
  })
})
