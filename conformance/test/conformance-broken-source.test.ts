import * as plc from '@did-plc/lib'
import { NSID } from '@pds-transfer/core'
import type { AccountSource, TransferCaller } from '@pds-transfer/source'
import type { FastifyRequest } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixtureBytes } from '../src/fixtures/build-account.ts'
import { type JsonCall, startJsonRewritingProxy } from '../src/harness/json-rewriting-proxy.ts'
import { overrideSource } from '../src/harness/override-source.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { renumber, startRewritingProxy } from '../src/harness/rewriting-proxy.ts'
import type { SourceServer } from '../src/harness/source-server.ts'
import { TestTokenAuth } from '../src/harness/test-auth.ts'
import type { SqliteAccountStore } from '../src/store/sqlite-account-store.ts'
import { draftSourceChecks, runChecks, sourceChecks } from '../src/suite/index.ts'
import { type SelfSource, startSelfSource } from '../src/suite/self-source.ts'

/** A verifier that takes the account from the request instead of comparing it with the token's. */
class RequestDidAuth extends TestTokenAuth {
  override async verify(request: FastifyRequest, nsid: string): Promise<TransferCaller> {
    const caller = await super.verify(request, nsid)
    const did = (request.body as { did?: unknown } | undefined)?.did
    return typeof did === 'string' ? { ...caller, did } : caller
  }
}

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

/**
 * The draft's checks must catch a broken draft source by name: our source behind a proxy that
 * rewrites its JSON answers (or a verifier that believes the request's DID), each variant
 * failing exactly the check whose rule it breaks.
 */
describe("the draft's checks against broken variants of our source", () => {
  let plcDir: PlcDirectory
  const started: SelfSource[] = []
  beforeAll(async () => {
    plcDir = await startPlcDirectory()
  })
  afterAll(async () => {
    for (const s of started) await s.close()
    await plcDir?.close()
  })

  type Rewrite = (
    call: JsonCall,
    source: SourceServer,
  ) => Promise<{ status: number; json: unknown } | undefined>

  async function draftFailures(
    rewrite?: Rewrite,
    options: { auth?: TestTokenAuth; complete?: boolean } = {},
  ) {
    const self = await startSelfSource({
      plc: plcDir,
      ...(rewrite && {
        frontUrl: (source: SourceServer) =>
          startJsonRewritingProxy(source.url, (call) => rewrite(call, source)),
      }),
      ...(options.auth && { auth: options.auth }),
    })
    started.push(self)
    if (options.complete) await self.enableDraftCompletion()
    const results = await runChecks(draftSourceChecks, self.draft)
    return results.filter((r) => r.status === 'fail')
  }

  const exportAnswer =
    (change: (call: JsonCall) => { status: number; json: unknown } | undefined): Rewrite =>
    async (call) =>
      call.nsid === NSID.exportAccount ? change(call) : undefined

  it('capabilities echoed as asked (the unknown token kept): fails source.draft.capabilities.intersection only', async () => {
    const failed = await draftFailures(
      exportAnswer((call) =>
        call.status === 200
          ? {
              status: 200,
              json: {
                ...(call.json as object),
                capabilities: (call.request as { capabilities?: string[] }).capabilities ?? ['base'],
              },
            }
          : undefined,
      ),
    )
    expect(failed.map((r) => r.id)).toEqual(['source.draft.capabilities.intersection'])
    expect(failed[0]?.evidence).toMatch(/the unknown token was kept, not dropped/)
  })

  it('an answer without privateState: fails source.draft.export.answer only', async () => {
    const failed = await draftFailures(
      exportAnswer((call) => {
        if (call.status !== 200) return undefined
        const { privateState: _p, ...rest } = call.json as Record<string, unknown>
        return { status: 200, json: rest }
      }),
    )
    expect(failed.map((r) => r.id)).toEqual(['source.draft.export.answer'])
    expect(failed[0]?.evidence).toMatch(/privateState/)
  })

  it('app passwords in privateState: fails source.draft.export.no-credentials only', async () => {
    const failed = await draftFailures(
      exportAnswer((call) => {
        if (call.status !== 200) return undefined
        const json = call.json as { privateState: Record<string, unknown> }
        return {
          status: 200,
          json: { ...json, privateState: { ...json.privateState, appPasswords: [{ name: 'p', hash: 'x' }] } },
        }
      }),
    )
    expect(failed.map((r) => r.id)).toEqual(['source.draft.export.no-credentials'])
    expect(failed[0]?.evidence).toMatch(/carries credentials: appPasswords/)
  })

  it('the probe refused by another name (AuthMissing): fails source.draft.auth.probe only', async () => {
    const failed = await draftFailures(
      exportAnswer((call) =>
        call.authorized ? undefined : { status: 401, json: { error: 'AuthMissing', message: 'no token' } },
      ),
    )
    expect(failed.map((r) => r.id)).toEqual(['source.draft.auth.probe'])
    expect(failed[0]?.evidence).toMatch(/expected 401 or 403 TransferNotAuthorized.*got HTTP 401 AuthMissing/)
  })

  it("the token's sub never compared with the requested DID: fails source.draft.auth.other-account only", async () => {
    const failed = await draftFailures(undefined, { auth: new RequestDidAuth() })
    expect(failed.map((r) => r.id)).toEqual(['source.draft.auth.other-account'])
    expect(failed[0]?.evidence).toMatch(/HTTP 200: the source exported did:plc:\S+ to a token for/)
  })

  it('a repeat taken without resumable: fails source.draft.resume.requires-resumable only', async () => {
    const failed = await draftFailures(
      exportAnswer((call) => {
        const body = call.request as { transferId: string; capabilities?: string[] }
        return call.status === 409 && !body.capabilities
          ? { status: 200, json: { transferId: body.transferId, capabilities: ['base'], privateState: {} } }
          : undefined
      }),
    )
    expect(failed.map((r) => r.id)).toEqual(['source.draft.resume.requires-resumable'])
    expect(failed[0]?.evidence).toMatch(/must be 409 TransferAlreadyActive.*got HTTP 200/)
  })

  /** Re-signs the operation completeTransfer answers with the source's own rotation key, changed. */
  const completeAnswer =
    (change: (op: plc.Operation) => plc.Operation): Rewrite =>
    async (call, source) => {
      if (call.nsid !== NSID.completeTransfer || call.status !== 200) return undefined
      const { sig: _sig, ...unsigned } = change(
        (call.json as { signedPlcOperation: plc.Operation }).signedPlcOperation,
      )
      return {
        status: 200,
        json: { signedPlcOperation: await plc.signOperation(unsigned, source.rotationKey) },
      }
    }

  it("an operation that drops the user's key: fails source.draft.complete.plc-operation only", async () => {
    const failed = await draftFailures(
      completeAnswer((op) => ({ ...op, rotationKeys: op.rotationKeys.slice(1) })),
      { complete: true },
    )
    expect(failed.map((r) => r.id)).toEqual(['source.draft.complete.plc-operation'])
    expect(failed[0]?.evidence).toMatch(
      /not acceptable: it drops or reorders the account's own rotation keys/,
    )
  })

  it('an operation that also changes the handle: fails source.draft.complete.plc-operation only', async () => {
    const failed = await draftFailures(
      completeAnswer((op) => ({ ...op, alsoKnownAs: ['at://someone-else.test'] })),
      { complete: true },
    )
    expect(failed.map((r) => r.id)).toEqual(['source.draft.complete.plc-operation'])
    expect(failed[0]?.evidence).toMatch(/also changes alsoKnownAs \(the handle\)/)
  })

  it("a source signing a request that drops the user's key: fails source.draft.complete.refuses-dropping-user-key", async () => {
    const failed = await draftFailures(
      async (call) => {
        const keys = (call.request as { newRotationKeys?: string[] } | undefined)?.newRotationKeys
        return call.nsid === NSID.completeTransfer && keys?.length === 1
          ? { status: 200, json: { signedPlcOperation: { type: 'plc_operation' } } }
          : undefined
      },
      { complete: true },
    )
    expect(failed.map((r) => r.id)).toEqual(['source.draft.complete.refuses-dropping-user-key'])
    expect(failed[0]?.evidence).toMatch(/signed an operation dropping the DID's rotation keys/)
  })
})
