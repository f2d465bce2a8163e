import { rename } from 'node:fs/promises'
import { estimateAccountSize } from '@pds-transfer/destination'
import { CID } from 'multiformats/cid'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'

/**
 * Issue 18, item 7: the size before the move, from what a reference PDS (0.5.35) serves to
 * anyone: listBlobs paged to its end, each blob sized by HEAD getBlob, a blob whose file is gone
 * counted as not served (spec/dialect-plain-pds.md, "Size before the move").
 */
describe('the size estimate against a reference PDS', () => {
  let plc: PlcDirectory
  let pds: Awaited<ReturnType<typeof startPlainPds>>
  let kim: SeededAccount
  beforeAll(async () => {
    plc = await startPlcDirectory()
    pds = await startPlainPds(plc.namedUrl)
    kim = await seedReferenceAccount(pds.url, {
      handle: 'kim.test',
      email: 'kim@example.com',
      password: 'kim-password-1',
      posts: 5,
      images: 5,
      follows: 1,
    })
  }, 60_000)
  afterAll(async () => {
    await pds?.close()
    await plc?.close()
  })

  it('counts and sizes every image over several pages, and names one whose file is gone', async () => {
    const lost = [...kim.blobs.keys()][2] as string
    const store = pds.pds.ctx.blobstore(kim.did) as unknown as { getStoredPath(cid: CID): string }
    const path = store.getStoredPath(CID.parse(lost))
    await rename(path, `${path}.lost`)
    try {
      const estimate = await estimateAccountSize(pds.url, kim.did, { pageLimit: 2 })
      const kept = [...kim.blobs].filter(([cid]) => cid !== lost)
      expect(estimate).toEqual({
        blobs: 5,
        allListed: true,
        sized: 4,
        sizedBytes: kept.reduce((sum, [, bytes]) => sum + bytes.byteLength, 0),
        notServed: 1,
      })
    } finally {
      await rename(`${path}.lost`, path)
    }
  })

  it('says nothing rather than something wrong when the server will not list the images', async () => {
    // The PLC directory answers no XRPC: no listBlobs, no estimate.
    expect(await estimateAccountSize(plc.url, kim.did)).toBeUndefined()
    // An account the PDS does not hold: listBlobs refuses.
    expect(await estimateAccountSize(pds.url, 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa')).toBeUndefined()
  })
})
