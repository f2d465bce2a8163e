import { blobCid, CONTENT_TYPE, encodeBlobpack } from '@pds-transfer/core'
import { bearerSourceClient, type SourceClient } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount, fixtureBytes } from '../src/fixtures/build-account.ts'
import { craftedSourceClient } from '../src/harness/crafted-source.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { collect } from '../src/harness/hostile-streams.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'
import { TRANSFER_SCOPES } from '../src/harness/test-authorizer.ts'

const MAX_BLOB = 64 * 1024

/**
 * Issue 26, item 4: getBlob reconciliation does not trust the source. A blob left out of the
 * stream and answered by getBlob with bytes that do not hash to its CID, or with more bytes than
 * the destination's blob limit, is not stored under that CID; it is listed missing (the user
 * decides at completion) and nothing else of the account is lost.
 */
describe('reconciliation checks what getBlob answers', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let dest: DestinationServer

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({ plc: plcDir })
    dest = await startDestinationServer({ plc: plcDir, limits: { maxBlobSize: MAX_BLOB } })
  }, 60_000)

  afterAll(async () => {
    await dest?.close()
    await source?.close()
    await plcDir?.close()
  })

  const account = (blobSizes: number[]) =>
    buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts: 6, blobSizes },
    })

  /**
   * The account's real CAR and every blob but `withheld` in one blobpack (a literal 0014 stream:
   * no end manifest defers it), other calls to the real source except getBlob of `withheld`,
   * which `answer` serves. `asked` counts those getBlob calls.
   */
  function withholding(a: FixtureAccount, withheld: string, answer: (real: Response) => Promise<Response>) {
    const honest = bearerSourceClient(
      source.url,
      source.auth.issue({ did: a.did, clientId: dest.clientId }, TRANSFER_SCOPES),
    )
    const sent = [...a.blobs].filter(([cid]) => cid !== withheld).map(([, bytes]) => bytes)
    const stream = craftedSourceClient(honest, async () => [
      { contentType: CONTENT_TYPE.repoCar, bytes: await source.store.exportCar(a.did) },
      {
        contentType: CONTENT_TYPE.blobpack,
        bytes: await collect(
          encodeBlobpack(
            sent.map((b) => ({
              cid: blobCid(b),
              size: b.length,
              open: async function* () {
                yield b
              },
            })),
          ),
        ),
      },
    ])
    const asked = { n: 0 }
    const client: SourceClient = {
      url: honest.url,
      async fetch(path, init) {
        const res = await stream.fetch(path, init)
        if (!path.startsWith('/xrpc/com.atproto.sync.getBlob?') || !path.includes(withheld)) return res
        asked.n++
        return answer(res)
      },
    }
    return { client, asked }
  }

  async function expectMissingOnly(a: FixtureAccount, client: SourceClient, withheld: string) {
    const t = await dest.engine.wait((await dest.engine.start({ did: a.did, client })).transferId)
    expect(t.failure).toBeUndefined()
    expect(t).toMatchObject({ status: 'importing', stage: 'awaitingPlcToken', missingBlobs: [withheld] })
    expect(t.progress).toMatchObject({ blobsReconciled: 0, blobsMissing: 1 })
    expect(await dest.sink.hasBlob(a.did, withheld)).toBe(false)
    // Nothing else lost: the repo and every streamed blob, byte for byte.
    expect(Buffer.from(await dest.store.exportCar(a.did))).toEqual(
      Buffer.from(await source.store.exportCar(a.did)),
    )
    for (const [cid, bytes] of a.blobs) {
      if (cid === withheld) continue
      const chunks: Uint8Array[] = []
      for await (const c of (await dest.store.openBlob(a.did, cid)) ?? []) chunks.push(c)
      expect(Buffer.concat(chunks), cid).toEqual(Buffer.from(bytes))
    }
    return t
  }

  it('a getBlob answer that does not hash to the CID is not stored: the blob is missing', async () => {
    const a = await account([3000, 4000, 5000])
    const [withheld, real] = [...a.blobs][1] as [string, Uint8Array]
    const { client, asked } = withholding(a, withheld, async (res) => {
      await res.body?.cancel()
      const wrong = fixtureBytes(real.length, 4242)
      return new Response(wrong, { headers: { 'content-length': String(wrong.length) } })
    })
    await expectMissingOnly(a, client, withheld)
    expect(asked.n).toBe(1)
  })

  it('a getBlob answer larger than the blob limit is not stored, even with the right bytes', async () => {
    const a = await account([3000, MAX_BLOB + 6000])
    const [withheld] = [...a.blobs][1] as [string, Uint8Array]
    // The real source's honest answer: only the size limit stands in the way.
    const { client, asked } = withholding(a, withheld, async (res) => res)
    await expectMissingOnly(a, client, withheld)
    expect(asked.n).toBe(1)
  })

  it('control: the same withheld blob, answered honestly within the limit, is reconciled', async () => {
    const a = await account([3000, 4000])
    const [withheld] = [...a.blobs][1] as [string, Uint8Array]
    const { client, asked } = withholding(a, withheld, async (res) => res)
    const t = await dest.engine.wait((await dest.engine.start({ did: a.did, client })).transferId)
    expect(t).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    expect(t.progress).toMatchObject({ blobsReconciled: 1, blobsMissing: 0 })
    expect(await dest.sink.hasBlob(a.did, withheld)).toBe(true)
    expect(asked.n).toBe(1)
  })
})
