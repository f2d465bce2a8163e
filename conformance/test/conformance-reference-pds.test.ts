import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { headlessAuthorize } from '../src/harness/headless-oauth.ts'
import { type ReferencePdsPair, startReferencePdsPair } from '../src/harness/reference-pds.ts'
import {
  buildReport,
  destinationChecks,
  engineDriver,
  formatTable,
  type HostileSource,
  runChecks,
  type SourceTarget,
  sourceChecks,
  startHostileSource,
} from '../src/suite/index.ts'

/**
 * The same checks against the reference PDS adapters (@atproto/pds with our routes): A as a
 * source, reached with a real OAuth session (PAR, DPoP) that B signed in for; B as a
 * destination, pulling from our hostile source.
 */
type Did = `did:${string}:${string}`

describe('conformance suite against the reference PDS adapters', () => {
  let pair: ReferencePdsPair
  let hostile: HostileSource
  beforeAll(async () => {
    pair = await startReferencePdsPair({ limits: { retry: { attempts: 2, baseDelayMs: 20 } } })
    hostile = await startHostileSource({
      plcUrl: pair.plc.url,
      destinationClientId: `${pair.b.url}/.well-known/oauth-client-metadata/migration`,
    })
  }, 120_000)
  afterAll(async () => {
    await hostile?.close()
    await pair?.close()
  })

  it("A passes the source checks (OAuth DPoP session of B, B's published key)", async () => {
    const alice = await seedReferenceAccount(pair.a.url, {
      handle: 'conf-alice.test',
      email: 'conf-alice@example.com',
      password: 'conf-alice-password',
      posts: 20,
      images: 3,
      follows: 3,
    })
    const authorizeUrl = await pair.b.authorizer.authorize({ did: alice.did, sourceUrl: pair.a.url })
    const callback = await headlessAuthorize(authorizeUrl, {
      username: alice.handle,
      password: alice.password,
    })
    const { client } = await pair.b.authorizer.callback(callback.searchParams)
    const recipientKey = await pair.b.keys.current('HPKE-3')
    if (!recipientKey) throw new Error('B publishes no HPKE-3 key')
    const target: SourceTarget = {
      url: pair.a.url,
      did: alice.did,
      client,
      recipientKey,
      plcUrl: pair.plc.url,
      plcTokenSent: async () => (pair.plcTokens.get(alice.did)?.length ?? 0) > 0,
      accountActive: async () =>
        (await pair.a.pds.ctx.accountManager.getAccount(alice.did as Did, { includeDeactivated: true }))
          ?.deactivatedAt == null,
    }
    const results = await runChecks(sourceChecks, target)
    console.log(formatTable(buildReport({ role: 'source', url: target.url }, new Date(), results)))
    expect(results.filter((r) => r.status === 'fail')).toEqual([])
    expect(results.filter((r) => r.status === 'skip').map((r) => r.id)).toEqual([
      'source.complete.plc-operation',
      'source.errors.account-deactivated',
      'source.errors.transfer-already-active',
    ])
  }, 60_000)

  it('B passes the destination checks', async () => {
    const { b } = pair
    const hasRepo = async (did: string) => {
      if (!(await b.pds.ctx.actorStore.exists(did))) return false
      return (await b.pds.ctx.actorStore.read(did as Did, (store) => store.record.recordCount())) > 0
    }
    const target = {
      url: b.url,
      hostile,
      verdictTimeoutMs: 30_000,
      ...engineDriver(b.engine, b.sink, hasRepo),
    }
    const results = await runChecks(destinationChecks, target)
    console.log(formatTable(buildReport({ role: 'destination', url: b.url }, new Date(), results)))
    expect(results.filter((r) => r.status !== 'pass')).toEqual([])
  }, 60_000)
})
