import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { blobCid } from '../src/blob-cid.ts'
import { readBlobpack } from '../src/blobpack-reader.ts'
import { encodeBlobpack } from '../src/blobpack-writer.ts'
import { WireError } from '../src/errors.ts'

// Fixed seed: CI runs the same cases every time; change it locally to explore.
const RUNS = { numRuns: 300, seed: 0x0014 }

/** A valid pack of these blobs, with the offset of each blob's data. */
async function packOf(blobs: Uint8Array[]): Promise<{ bytes: Uint8Array; dataOffsets: number[] }> {
  const parts: Uint8Array[] = []
  const entries = blobs.map((b) => ({
    cid: blobCid(b),
    size: b.length,
    async *open() {
      yield b
    },
  }))
  for await (const c of encodeBlobpack(entries)) parts.push(c)
  const dataOffsets: number[] = []
  let offset = 5
  for (const b of blobs) {
    dataOffsets.push(offset + 48)
    offset += 48 + b.length
  }
  return { bytes: Buffer.concat(parts), dataOffsets }
}

/** Splits `bytes` at the given cut points (any order, out of range ignored). */
async function* split(bytes: Uint8Array, cuts: number[]): AsyncGenerator<Uint8Array> {
  let start = 0
  for (const cut of [...new Set(cuts)].sort((a, b) => a - b)) {
    if (cut <= start || cut >= bytes.length) continue
    yield bytes.subarray(start, cut)
    start = cut
  }
  yield bytes.subarray(start)
}

/** Reads a pack fully; resolves with the outcome, never hangs on a finite input. */
async function outcome(source: AsyncIterable<Uint8Array>): Promise<'ok' | WireError> {
  try {
    await readBlobpack(source, {
      maxBlobSize: 1 << 20,
      onBlob: () => ({ write() {}, end() {}, abort() {} }),
    })
    return 'ok'
  } catch (err) {
    if (err instanceof WireError) return err
    throw err
  }
}

const blobsArb = fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 5 })
const cutsArb = fc.array(fc.nat({ max: 2000 }), { maxLength: 6 })

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat({ max: 7 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
  }),
)

function mutate(bytes: Uint8Array, m: Mutation): Uint8Array {
  const at = m.at % (bytes.length + 1)
  if (m.kind === 'truncate') return bytes.subarray(0, at)
  if (m.kind === 'insert') return Buffer.concat([bytes.subarray(0, at), m.bytes, bytes.subarray(at)])
  const out = Uint8Array.from(bytes)
  out[at % out.length]! ^= 1 << m.bit
  return out
}

describe('blobpack reader fuzz', () => {
  it('parses or throws a WireError on random bytes', async () => {
    const withHeader = fc
      .uint8Array({ maxLength: 400 })
      .map((b) => Buffer.concat([Buffer.from('ATPB\x01'), b]))
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.uint8Array({ maxLength: 400 }), withHeader),
        cutsArb,
        async (bytes, cuts) => {
          await outcome(split(bytes, cuts))
        },
      ),
      RUNS,
    )
  })

  it('parses or throws a WireError on mutated valid packs', async () => {
    await fc.assert(
      fc.asyncProperty(
        blobsArb,
        fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
        cutsArb,
        async (blobs, ms, cuts) => {
          const { bytes } = await packOf(blobs)
          await outcome(split(ms.reduce(mutate, bytes), cuts))
        },
      ),
      RUNS,
    )
  })

  it('parses every valid pack whatever its chunking', async () => {
    await fc.assert(
      fc.asyncProperty(blobsArb, cutsArb, async (blobs, cuts) => {
        const { bytes } = await packOf(blobs)
        expect(await outcome(split(bytes, cuts))).toBe('ok')
      }),
      RUNS,
    )
  })

  it('rejects any single changed byte of blob data as a CID mismatch', async () => {
    const nonEmpty = fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { minLength: 1, maxLength: 5 })
    await fc.assert(
      fc.asyncProperty(
        nonEmpty,
        fc.nat(),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        cutsArb,
        async (blobs, which, pos, xor, cuts) => {
          const { bytes, dataOffsets } = await packOf(blobs)
          const i = which % blobs.length
          const corrupt = Uint8Array.from(bytes)
          corrupt[dataOffsets[i]! + (pos % blobs[i]!.length)]! ^= xor
          const result = await outcome(split(corrupt, cuts))
          expect(result).toBeInstanceOf(WireError)
          expect((result as WireError).reason).toBe('BlobpackCidMismatch')
        },
      ),
      RUNS,
    )
  })
})
