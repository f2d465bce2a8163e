import type {
  BlobpackSummary,
  DecodedFrame,
  DecodeFramesOptions,
  ReadBlobpackOptions,
} from '@pds-transfer/core'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { destinationChecks, draftDestinationChecks, runChecks } from '../src/suite/index.ts'
import { type SelfDestination, startSelfDestination } from '../src/suite/self-destination.ts'

/** Which deliberately broken build of our destination the core module below gives. */
const broken = vi.hoisted(() => ({
  variant: 'none' as 'none' | 'blob-cid' | 'aead-tag' | 'preferences' | 'mst' | 'plc-move',
}))

/**
 * Deliberately broken builds of our destination, one check of the core module turned off at a
 * time (only this file's module graph gets them): a blobpack reader that stores whatever bytes
 * an entry carries under its CID (the addendum's "MUST verify each blob's CID"), a frame decoder
 * that never checks AEAD tags (§2.4), and a preferences parser that only checks for an array.
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
  /** Frames decrypted with the right key and nonce for their number, their tags never checked. */
  async function* taglessDecodeFrames(
    source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    { keys }: DecodeFramesOptions,
  ): AsyncGenerator<DecodedFrame> {
    const chunks: Uint8Array[] = []
    for await (const c of source) chunks.push(c)
    const all = Buffer.concat(chunks)
    for (let at = 0, expected = 0; at < all.length; expected++) {
      if (all.length - at < 12) throw new core.WireError('TruncatedHeader', `inside frame ${expected}`)
      const frameNumber = all.readUInt32BE(at)
      if (frameNumber !== expected) throw new core.WireError('FrameOutOfOrder', `frame ${frameNumber}`)
      const typeLength = all.readUInt32BE(at + 4)
      const contentType = all.subarray(at + 8, at + 8 + typeLength).toString('utf8')
      const ciphertextLength = all.readUInt32BE(at + 8 + typeLength)
      const start = at + 12 + typeLength
      at = start + ciphertextLength
      if (at > all.length)
        throw new core.WireError('TruncatedFrame', `stream ends inside frame ${frameNumber}`)
      const decipher = core.createFrameDecipher(
        keys.algorithm,
        keys.key(frameNumber),
        keys.nonce(frameNumber),
      )
      const plaintext = decipher.update(all.subarray(start, at - core.LIMITS.tagLength))
      yield {
        frameNumber,
        contentType,
        ciphertextLength,
        plaintextLength: plaintext.length,
        async *plaintext() {
          yield plaintext
        },
      }
    }
  }
  function arrayOnlyParsePreferences(bytes: Uint8Array): unknown[] {
    const value: unknown = JSON.parse(Buffer.from(bytes).toString('utf8'))
    if (!Array.isArray(value))
      throw new core.WireError('InvalidPreferences', 'preferences must be a JSON array')
    return value
  }
  return {
    ...core,
    readBlobpack: (...args: Parameters<typeof core.readBlobpack>) =>
      (broken.variant === 'blob-cid' ? uncheckedReadBlobpack : core.readBlobpack)(...args),
    decodeFrames: (...args: Parameters<typeof core.decodeFrames>) =>
      (broken.variant === 'aead-tag' ? taglessDecodeFrames : core.decodeFrames)(...args),
    parsePreferences: (bytes: Uint8Array) =>
      (broken.variant === 'preferences' ? arrayOnlyParsePreferences : core.parsePreferences)(bytes),
  }
})

/**
 * A destination whose repo verifier checks the commit (its DID and signature) but walks the MST
 * without checking anything of it: not key order, prefix compression, layers nor node shape.
 * Mocked by file, since the frame importer imports the verifier by relative path.
 */
vi.mock('../../packages/destination/src/repo-verifier.ts', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../packages/destination/src/repo-verifier.ts')>()
  const { decode } = await import('@atproto/lex-cbor')
  const { decodeCid, enumBlobRefs, getBlobCidString } = await import('@atproto/lex-data')
  const { verifyCommitSig } = await import('@atproto/repo')
  const { InvalidRepoError } = await import('../../packages/destination/src/car-blocks.ts')
  type Params = Parameters<typeof real.verifyStagedRepo>[0]
  type Node = { l: Cid | null; e: { v: Cid; t: Cid | null }[] }
  type Cid = ReturnType<typeof decodeCid>
  async function mstUncheckedVerify(params: Params): ReturnType<typeof real.verifyStagedRepo> {
    const block = async (cid: Cid) => decode((await params.staging.get(cid.bytes)) as Uint8Array)
    const root = decodeCid(params.root.bytes)
    const commit = (await block(root)) as { did: string; rev: string; data: Cid }
    if (commit.did !== params.did) throw new InvalidRepoError(`commit is for ${commit.did}`)
    if (!(await verifyCommitSig(commit as never, params.signingKey)))
      throw new InvalidRepoError('commit signature does not verify')
    const out = { commitCid: root.toString(), rev: commit.rev, records: 0, blobCids: new Set<string>() }
    const walk = async (cid: Cid): Promise<void> => {
      const node = (await block(cid)) as Node
      if (node.l) await walk(node.l)
      for (const e of node.e) {
        out.records++
        for (const ref of enumBlobRefs(await block(e.v), { allowLegacy: true, strict: false }))
          out.blobCids.add('cid' in ref ? ref.cid : getBlobCidString(ref))
        if (e.t) await walk(e.t)
      }
    }
    await walk(commit.data)
    return out
  }
  return {
    ...real,
    verifyStagedRepo: (params: Params) =>
      (broken.variant === 'mst' ? mstUncheckedVerify : real.verifyStagedRepo)(params),
  }
})

/**
 * A destination that trusts the operation completeTransfer answers as long as it parses: it
 * never compares it with the move it asked for (the user's keys, nothing else changed, D8).
 */
vi.mock('../../packages/destination/src/plc-check.ts', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../packages/destination/src/plc-check.ts')>()
  const plcLib = await import('@did-plc/lib')
  return {
    ...real,
    checkPlcMove: (...args: Parameters<typeof real.checkPlcMove>) =>
      broken.variant === 'plc-move'
        ? Promise.resolve(plcLib.def.operation.parse(args[1]))
        : real.checkPlcMove(...args),
  }
})

describe('the suite against broken builds of our destination', () => {
  let plcDir: PlcDirectory
  let self: SelfDestination
  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    self = await startSelfDestination({ plc: plcDir })
  })
  afterAll(async () => {
    broken.variant = 'none'
    await self?.close()
    await plcDir?.close()
  })

  async function failures(variant: typeof broken.variant) {
    broken.variant = variant
    try {
      // A fresh target object: the honest control runs again under this build. The draft's
      // checks too: the same verifiers read what comes over the sync endpoints.
      const results = [
        ...(await runChecks(destinationChecks, { ...self.target })),
        ...(await runChecks(draftDestinationChecks, { ...self.draftTarget })),
      ]
      return results.filter((r) => r.status === 'fail')
    } finally {
      broken.variant = 'none'
    }
  }

  it("trusting completeTransfer's operation: fails the v1 and draft completion checks, and only those", async () => {
    broken.variant = 'plc-move'
    try {
      const v1 = await runChecks(destinationChecks, { ...self.target })
      const draft = await runChecks(draftDestinationChecks, { ...self.draftTarget })
      const failed = [...v1, ...draft].filter((r) => r.status === 'fail')
      expect(failed.map((r) => r.id)).toEqual([
        'destination.complete.hostile-operation',
        'destination.draft.complete.drops-user-key',
        'destination.draft.complete.changes-handle',
      ])
      for (const r of failed) expect(r.evidence).toMatch(/completed with the operation/)
    } finally {
      broken.variant = 'none'
    }
  }, 90_000)

  it('not checking blob CIDs: fails destination.rejects.blob-wrong-cid, and only that', async () => {
    const failed = await failures('blob-cid')
    expect(failed.map((r) => r.id)).toEqual(['destination.rejects.blob-wrong-cid'])
    expect(failed[0]?.evidence).toMatch(/accepted the stream|refused blobs were stored/)
  }, 60_000)

  it('not checking AEAD tags: fails every check whose attack only the tag catches', async () => {
    const failed = await failures('aead-tag')
    expect(failed.map((r) => r.id)).toEqual([
      'destination.rejects.tampered-car',
      'destination.rejects.tampered-blobpack',
      'destination.rejects.reordered-frames',
      'destination.rejects.content-type-swap',
      'destination.rejects.did-swap',
      'destination.rejects.transfer-id-swap',
    ])
    const evidence = Object.fromEntries(failed.map((r) => [r.id, r.evidence]))
    // Data intact: accepted outright.
    expect(evidence['destination.rejects.tampered-car']).toMatch(/accepted the stream/)
    expect(evidence['destination.rejects.tampered-blobpack']).toMatch(/accepted the stream/)
    // Garbage or the wrong frame kind: refused, but by a later step, for the wrong reason.
    expect(evidence['destination.rejects.reordered-frames']).toMatch(/wrong reason: .*BlobInvalid/)
    expect(evidence['destination.rejects.content-type-swap']).toMatch(/wrong reason: .*PreferencesInvalid/)
    expect(evidence['destination.rejects.did-swap']).toMatch(/wrong reason: .*RepoInvalid/)
  }, 60_000)

  it('not checking the MST: fails destination.rejects.mst-invalid, and only that', async () => {
    const failed = await failures('mst')
    expect(failed.map((r) => r.id)).toEqual(['destination.rejects.mst-invalid'])
    expect(failed[0]?.evidence).toMatch(/accepted the stream/)
  }, 60_000)

  it('checking only that preferences are an array: fails destination.rejects.preferences-item-invalid only', async () => {
    const failed = await failures('preferences')
    expect(failed.map((r) => r.id)).toEqual(['destination.rejects.preferences-item-invalid'])
    expect(failed[0]?.evidence).toMatch(/accepted the stream/)
  }, 60_000)
})
