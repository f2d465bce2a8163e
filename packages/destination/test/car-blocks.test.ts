import { cidForLex, encode } from '@atproto/lex-cbor'
import { BlockMap, blocksToCarFile } from '@atproto/repo'
import { CarBlockIterator } from '@ipld/car/iterator'
import fc from 'fast-check'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256, sha512 } from 'multiformats/hashes/sha2'
import { describe, expect, it } from 'vitest'
import type { VerifiedBlock } from '../src/account-sink.ts'
import { InvalidRepoError, verifiedCarBatches } from '../src/car-blocks.ts'

/** A CAR of `n` small dag-cbor blocks (plus one larger one), the first as root. */
async function sampleCar(n: number): Promise<{ car: Uint8Array; root: string }> {
  const blocks = new BlockMap()
  let root: string | undefined
  for (let i = 0; i < n; i++) {
    const value = { $type: 'app.bsky.feed.post', text: `post ${i} ${'x'.repeat(i % 300)}`, n: i }
    const cid = await cidForLex(value)
    blocks.set(cid, encode(value))
    root ??= cid.toString()
  }
  const big = { blob: new Uint8Array(200_000).fill(7) }
  blocks.set(await cidForLex(big), encode(big))
  const rootCid = CID.parse(root as string)
  return { car: await blocksToCarFile(rootCid as never, blocks), root: root as string }
}

/** `bytes` cut at the given offsets. */
async function* chunked(bytes: Uint8Array, cuts: number[]): AsyncGenerator<Uint8Array> {
  let start = 0
  for (const cut of [...new Set(cuts)].sort((a, b) => a - b)) {
    if (cut <= start || cut >= bytes.length) continue
    yield bytes.slice(start, cut)
    start = cut
  }
  yield bytes.slice(start)
}

/** A block as hex strings: compared fast, and a view equals a copy. */
const plain = (b: VerifiedBlock) => ({
  cid: Buffer.from(b.cid).toString('hex'),
  bytes: Buffer.from(b.bytes).toString('hex'),
})

async function read(chunks: AsyncIterable<Uint8Array>, batchBytes?: number) {
  let root: string | undefined
  const blocks: ReturnType<typeof plain>[] = []
  for await (const batch of verifiedCarBatches(chunks, {
    onRoot: (r) => (root = r.toString()),
    ...(batchBytes !== undefined && { batchBytes }),
  }))
    blocks.push(...batch.map(plain))
  return { root, blocks }
}

async function reference(car: Uint8Array) {
  const iterator = await CarBlockIterator.fromBytes(car)
  const blocks: ReturnType<typeof plain>[] = []
  for await (const b of iterator) blocks.push(plain({ cid: b.cid.bytes, bytes: b.bytes }))
  return { root: (await iterator.getRoots())[0]?.toString(), blocks }
}

async function expectInvalid(chunks: AsyncIterable<Uint8Array>, message: RegExp): Promise<void> {
  const err = await read(chunks).then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(InvalidRepoError)
  expect((err as Error).message).toMatch(message)
}

describe('verifiedCarBatches', () => {
  it('yields exactly the blocks @ipld/car reads, whatever the chunk boundaries', async () => {
    const { car, root } = await sampleCar(300)
    const expected = await reference(car)
    expect(expected.root).toBe(root)
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: car.length - 1 }), { maxLength: 40 }),
        fc.integer({ min: 1, max: 64 * 1024 }),
        async (cuts, batchBytes) => {
          expect(await read(chunked(car, cuts), batchBytes)).toEqual(expected)
        },
      ),
      { numRuns: 30, endOnFailure: true },
    )
    // One byte at a time.
    const bytewise = Array.from({ length: car.length }, (_, i) => i)
    expect(await read(chunked(car, bytewise))).toEqual(expected)
  })

  it('rejects a block whose bytes do not match its CID', async () => {
    const { car } = await sampleCar(20)
    const tampered = car.slice()
    tampered[car.length - 10] = (tampered[car.length - 10] as number) ^ 1
    await expectInvalid(chunked(tampered, [100]), /does not match its bytes/)
  })

  it('rejects a CAR that ends inside a block', async () => {
    const { car } = await sampleCar(20)
    await expectInvalid(chunked(car.subarray(0, car.length - 5), [50]), /Unexpected end of data/)
  })

  it('passes a raw-codec block on and rejects a CID that is not DASL (sha2-512)', async () => {
    const bytes = new TextEncoder().encode('not a repo block')
    const rawCid = CID.createV1(raw.code, await sha256.digest(bytes))
    const blocks = new BlockMap()
    blocks.set(rawCid as never, bytes)
    const { blocks: passed } = await read(chunked(await blocksToCarFile(rawCid as never, blocks), []))
    expect(passed).toEqual([plain({ cid: rawCid.bytes, bytes })])
    const other = new BlockMap()
    other.set(CID.createV1(raw.code, await sha512.digest(bytes)) as never, bytes)
    await expectInvalid(chunked(await blocksToCarFile(rawCid as never, other), []), /is not a DASL CID/)
  })

  it('rejects a bad header, a CAR v2 and a CAR without a root; takes the first of several roots', async () => {
    await expectInvalid(chunked(Uint8Array.of(0), []), /repo CAR header/)
    await expectInvalid(chunked(Uint8Array.of(0x05, 1, 2, 3, 4, 5), []), /repo CAR header/)
    const blocks = new BlockMap()
    await expectInvalid(chunked(await blocksToCarFile(null, blocks), []), /has no root/)
    // A CAR v2 pragma (version 2, no roots): the repository spec's export format is CAR v1.
    const pragma = Uint8Array.of(0x0a, 0xa1, 0x67, ...new TextEncoder().encode('version'), 0x02)
    await expectInvalid(chunked(pragma, []), /CAR version: 2/)
    const { car, root } = await sampleCar(2)
    const header = encode({ version: 1, roots: [CID.parse(root), CID.parse(root)] as never })
    const rest = car.subarray(1 + (car[0] as number))
    const twoRoots = Buffer.concat([Uint8Array.of(header.length), header, rest])
    expect((await read(chunked(twoRoots, []))).root).toBe(root)
  })

  it('rejects a zero-length section', async () => {
    const { car } = await sampleCar(1)
    const withEmpty = new Uint8Array(car.length + 1)
    withEmpty.set(car)
    await expectInvalid(chunked(withEmpty, []), /zero length/)
  })
})
