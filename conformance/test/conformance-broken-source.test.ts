import type { AccountSource, TransferCaller } from '@pds-transfer/source'
import type { FastifyRequest } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixtureBytes } from '../src/fixtures/build-account.ts'
import { overrideSource } from '../src/harness/override-source.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { renumber, startRewritingProxy } from '../src/harness/rewriting-proxy.ts'
import { TestTokenAuth } from '../src/harness/test-auth.ts'
import type { SqliteAccountStore } from '../src/store/sqlite-account-store.ts'
import { runChecks, sourceChecks } from '../src/suite/index.ts'
import { type SelfSource, startSelfSource } from '../src/suite/self-source.ts'

/**
 * The suite must catch a broken source, by the right names: deliberately broken variants of
 * our own source, each failing exactly the checks whose rule it breaks (and no others, so a
 * check that fails for unrelated reasons would be noticed too).
 */
describe('the suite against broken variants of our source', () => {
  let plcDir: PlcDirectory
  const started: SelfSource[] = []
  beforeAll(async () => {
    plcDir = await startPlcDirectory()
  })
  afterAll(async () => {
    for (const s of started) await s.close()
    await plcDir?.close()
  })

  async function failures(options: Parameters<typeof startSelfSource>[0], bufferingFront = false) {
    const self = await startSelfSource(options)
    started.push(self)
    // A front that buffers whole answers delivers the token before any data, whatever the source
    // does: the timing is then not observable, as for a remote source.
    if (bufferingFront) self.target.plcTokenSent = undefined
    const results = await runChecks(sourceChecks, self.target)
    return results.filter((r) => r.status === 'fail')
  }

  /** Storage that hides from the export the blob with the smallest CID (a lost blob). */
  const hidingOneBlob = (store: SqliteAccountStore): AccountSource =>
    overrideSource(store, {
      async listBlobs(did, opts) {
        const page = await store.listBlobs(did, opts)
        const all = await store.listBlobs(did, { limit: 10_000 })
        const first = all.blobs.map((b) => b.cid).sort()[0]
        return { ...page, blobs: page.blobs.filter((b) => b.cid !== first) }
      },
    })

  /** Storage whose blob store returns other bytes (same length) for every blob: CIDs unchecked on the way out. */
  const corruptBlobs = (store: SqliteAccountStore): AccountSource =>
    overrideSource(store, {
      async openBlob(did, cid) {
        const stream = await store.openBlob(did, cid)
        if (!stream) return undefined
        let length = 0
        for await (const c of stream) length += c.length
        return (async function* () {
          yield fixtureBytes(length, 77)
        })()
      },
    })

  /** The literal 0014 timing (erratum E8): the PLC token is emailed as the export starts, not once it is written. */
  const emailsAtStart = (store: SqliteAccountStore): AccountSource =>
    overrideSource(store, {
      async snapshotRepo(did) {
        await store.requestPlcToken(did)
        return store.snapshotRepo(did)
      },
      async requestPlcToken() {},
    })

  /** A verifier that takes the account from the request instead of comparing it with the token's. */
  class RequestDidAuth extends TestTokenAuth {
    override async verify(request: FastifyRequest, nsid: string): Promise<TransferCaller> {
      const caller = await super.verify(request, nsid)
      const did = (request.body as { did?: unknown } | undefined)?.did
      return typeof did === 'string' ? { ...caller, did } : caller
    }
  }

  it('frame numbers off by one (numbered from 1): fails source.export.frame-numbers only', async () => {
    const failed = await failures(
      {
        plc: plcDir,
        frontUrl: (source) =>
          startRewritingProxy(source.url, (frames) => frames.map((f) => renumber(f, f.frameNumber + 1))),
      },
      true,
    )
    expect(failed.map((r) => r.id)).toEqual(['source.export.frame-numbers'])
    expect(failed[0]?.evidence).toMatch(/position 0 is numbered 1/)
  })

  it('a referenced blob left out of the stream: fails source.export.blobs-complete only', async () => {
    const failed = await failures({ plc: plcDir, wrapSource: hidingOneBlob })
    expect(failed.map((r) => r.id)).toEqual(['source.export.blobs-complete'])
    expect(failed[0]?.evidence).toMatch(/1 of 8 referenced blobs/)
  })

  it('blob bytes that do not match their CIDs: fails the blobpack rules and completeness', async () => {
    const failed = await failures({ plc: plcDir, wrapSource: corruptBlobs })
    expect(failed.map((r) => r.id)).toEqual([
      'source.export.blobpack',
      'source.export.blobs-complete',
      'source.export.end-manifest',
    ])
    expect(failed[0]?.evidence).toMatch(/BlobpackCidMismatch/)
  })

  it('the PLC token emailed when the export starts (E8): fails source.export.plc-token-email only', async () => {
    const failed = await failures({ plc: plcDir, wrapSource: emailsAtStart })
    expect(failed.map((r) => r.id)).toEqual(['source.export.plc-token-email'])
    expect(failed[0]?.evidence).toMatch(/sent before the export answered/)
  })

  it("the token's account never compared with the requested DID: fails source.auth.other-account only", async () => {
    const failed = await failures({ plc: plcDir, auth: new RequestDidAuth() })
    expect(failed.map((r) => r.id)).toEqual(['source.auth.other-account'])
    expect(failed[0]?.evidence).toMatch(/HTTP 200: the source exported did:plc:\S+ to a token for/)
  })
})
