import type { BlobpackSummary, ReadBlobpackOptions } from '@pds-transfer/core'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { destinationChecks, runChecks } from '../src/suite/index.ts'
import { type SelfDestination, startSelfDestination } from '../src/suite/self-destination.ts'

/**
 * A deliberately broken build of our destination: its blobpack reader stores whatever bytes an
 * entry carries under the entry's CID, never hashing them (the addendum's "MUST verify each
 * blob's CID"). Only this file's module graph gets the broken reader.
 */
vi.mock('@pds-transfer/core', async (importOriginal) => {
  const core = await importOriginal<typeof import('@pds-transfer/core')>()
  async function uncheckedReadBlobpack(
    plaintext: AsyncIterable<Uint8Array>,
    opts: ReadBlobpackOptions,
  ): Promise<BlobpackSummary> {
    const parts: Uint8Array[] = []
    for await (const c of plaintext) parts.push(Uint8Array.from(c))
    const all = Buffer.concat(parts)
    const summary: BlobpackSummary = { entries: 0, uniqueBlobs: 0, bytes: 0, cids: [] }
    for (let at = core.BLOBPACK_HEADER_LENGTH; at < all.length; ) {
      const cidLength = all.readUInt32BE(at)
      const cid = core.parseBlobCid(all.subarray(at + 4, at + 4 + cidLength))
      const size = Number(all.readBigUInt64BE(at + 4 + cidLength))
      const start = at + 12 + cidLength
      const sink = await opts.onBlob({ cid, size, duplicate: false })
      await sink.write(all.subarray(start, start + size))
      await sink.end()
      summary.entries++
      summary.uniqueBlobs++
      summary.bytes += size
      summary.cids.push(cid)
      at = start + size
    }
    return summary
  }
  return { ...core, readBlobpack: uncheckedReadBlobpack }
})

describe('the suite against a destination that does not check blob CIDs', () => {
  let plcDir: PlcDirectory
  let self: SelfDestination
  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    self = await startSelfDestination({ plc: plcDir })
  })
  afterAll(async () => {
    await self?.close()
    await plcDir?.close()
  })

  it('fails destination.rejects.blob-wrong-cid, and only that', async () => {
    const results = await runChecks(destinationChecks, self.target)
    const failed = results.filter((r) => r.status === 'fail')
    expect(failed.map((r) => [r.id, r.status])).toEqual([['destination.rejects.blob-wrong-cid', 'fail']])
    expect(failed[0]?.evidence).toMatch(/accepted the stream|refused blobs were stored/)
  }, 60_000)
})
