import type { PermissionedRepoHost } from '@pds-transfer/source'
import { afterAll, describe, expect, it } from 'vitest'
import { seedSpaceAccount } from '../src/fixtures/space-account.ts'
import { type SpaceHostServer, startSpaceHostServer } from '../src/harness/space-host-server.ts'
import { runChecks, type SpaceHostTarget, spaceHostChecks } from '../src/suite/index.ts'

/** The 0016 repo-host checks pass on our test PDS and catch one that serves tampered repos. */
const servers: SpaceHostServer[] = []
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()))
})

async function target(
  wrapHost?: (host: PermissionedRepoHost) => PermissionedRepoHost,
): Promise<SpaceHostTarget> {
  const server = await startSpaceHostServer({ ...(wrapHost && { wrapHost }) })
  servers.push(server)
  const alice = await seedSpaceAccount(server)
  return { url: server.url, client: alice.client, did: alice.did, signingKey: alice.key.did() }
}

describe('space host checks', () => {
  it('all pass on the SQLite test PDS', async () => {
    const results = await runChecks(spaceHostChecks, await target())
    expect(results.map((r) => [r.id, r.status, r.evidence])).toEqual(
      spaceHostChecks.map((c) => [c.id, 'pass', expect.any(String)]),
    )
    expect(results.find((r) => r.id === 'space.read.all-verify')?.evidence).toBe(
      '3 repos, 4 records, 1 blobs hashed, 1 owned spaces',
    )
  })

  it('a host whose repos do not hash to their commits fails space.read.all-verify, and only that', async () => {
    const tampering = await target((host) => ({
      listSpaces: (...a) => host.listSpaces(...a),
      repoHead: (...a) => host.repoHead(...a),
      readRepo: async (space, did) => {
        const repo = await host.readRepo(space, did)
        return repo && { ...repo, records: repo.records.slice(1) }
      },
      listBlobs: (...a) => host.listBlobs(...a),
      openBlob: (...a) => host.openBlob(...a),
      signer: (...a) => host.signer(...a),
    }))
    const results = await runChecks(spaceHostChecks, tampering)
    expect(results.filter((r) => r.status !== 'pass').map((r) => [r.id, r.status])).toEqual([
      ['space.read.all-verify', 'fail'],
    ])
    expect(results.find((r) => r.id === 'space.read.all-verify')?.evidence).toMatch(/set hash/)
  })
})
