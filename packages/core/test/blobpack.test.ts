import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { describe, expect, it } from 'vitest'
import { BLOB_CID_LENGTH, blobCid, blobCidFromDigest, isBlobCid, parseBlobCid } from '../src/blob-cid.ts'
import { type BlobSink, type ReadBlobpackOptions, readBlobpack } from '../src/blobpack-reader.ts'
import {
  BLOBPACK_HEADER_LENGTH,
  BLOBPACK_MAGIC,
  BLOBPACK_VERSION,
  type BlobpackSourceEntry,
  blobpackEntryOverhead,
  blobpackLength,
  encodeBlobpack,
} from '../src/blobpack-writer.ts'
import { CONTENT_TYPE } from '../src/content-types.ts'
import { WireError } from '../src/errors.ts'
import { decodeFrames } from '../src/frame-decoder.ts'
import { LIMITS } from '../src/limits.ts'
import { chunked, encodeAll, randomBytes, session } from './helpers.ts'

const MiB = 1024 * 1024

function entryOf(data: Uint8Array, chunkSize = 65536): BlobpackSourceEntry {
  return { cid: blobCid(data), size: data.length, open: () => chunked(data, chunkSize) }
}

async function collect(stream: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  for await (const c of stream) parts.push(c)
  return Buffer.concat(parts)
}

async function pack(blobs: Uint8Array[]): Promise<Uint8Array> {
  return collect(encodeBlobpack(blobs.map((b) => entryOf(b))))
}

/** A pack built by hand, to write what the encoder never would. */
function rawPack(
  entries: { cid: Uint8Array; size?: bigint; data?: Uint8Array; cidLength?: number }[],
  header = [0x41, 0x54, 0x50, 0x42, 0x01],
): Uint8Array {
  const parts: Uint8Array[] = [Uint8Array.from(header)]
  for (const e of entries) {
    const fixed = Buffer.alloc(4)
    fixed.writeUInt32BE(e.cidLength ?? e.cid.length)
    const size = Buffer.alloc(8)
    size.writeBigUInt64BE(e.size ?? BigInt(e.data?.length ?? 0))
    parts.push(fixed, e.cid, size, e.data ?? new Uint8Array(0))
  }
  return Buffer.concat(parts)
}

type SinkEvent = { cid: string; event: 'open' | 'end' | 'abort'; duplicate?: boolean; reason?: Error }

/** Reads a pack, recording what each sink receives. */
async function read(
  source: AsyncIterable<Uint8Array>,
  options: Omit<ReadBlobpackOptions, 'onBlob'> & { sink?: Partial<BlobSink> } = {},
) {
  const events: SinkEvent[] = []
  const blobs: Uint8Array[] = []
  const result = readBlobpack(source, {
    ...options,
    onBlob({ cid, duplicate }) {
      const parts: Uint8Array[] = []
      events.push({ cid: cid.toString(), event: 'open', duplicate })
      return {
        write(chunk) {
          parts.push(Uint8Array.from(chunk))
          return options.sink?.write?.(chunk)
        },
        end() {
          events.push({ cid: cid.toString(), event: 'end' })
          blobs.push(Buffer.concat(parts))
          return options.sink?.end?.()
        },
        abort(reason) {
          events.push({ cid: cid.toString(), event: 'abort', reason })
        },
      }
    },
  })
  return { result, events, blobs }
}

async function wireError(p: Promise<unknown>): Promise<WireError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(WireError)
  return err as WireError
}

async function expectReason(
  bytes: Uint8Array,
  reason: string,
  options: Omit<ReadBlobpackOptions, 'onBlob'> = {},
) {
  const { result, events } = await read(chunked(bytes, 7), options)
  const err = await wireError(result)
  expect(err.reason).toBe(reason)
  return { err, events }
}

const cidV1Raw = (data: Uint8Array) => blobCid(data).bytes

describe('blob CIDs', () => {
  it('computes the CIDv1/raw/sha2-256 of bytes, as multiformats does', async () => {
    const data = randomBytes(1000, 2)
    const expected = CID.createV1(raw.code, await sha256.digest(data))
    expect(blobCid(data).equals(expected)).toBe(true)
    expect(blobCid(data).bytes.length).toBe(BLOB_CID_LENGTH)
    expect(blobCid(new Uint8Array(0)).toString()).toBe(
      'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku',
    )
    expect(blobCidFromDigest(expected.multihash.digest).equals(expected)).toBe(true)
    expect(() => blobCidFromDigest(new Uint8Array(31))).toThrow(RangeError)
  })

  it('parses only canonical CIDv1/raw/sha2-256 bytes, into memory of its own', () => {
    const cid = blobCid(randomBytes(10, 3))
    const buffer = new Uint8Array(100)
    buffer.set(cid.bytes, 10)
    const view = buffer.subarray(10, 10 + BLOB_CID_LENGTH)
    const parsed = parseBlobCid(view)
    expect(parsed.equals(cid)).toBe(true)
    expect(parsed.bytes.buffer).not.toBe(buffer.buffer)
    expect(isBlobCid(parsed)).toBe(true)
    const bad = [
      new Uint8Array(0),
      cid.multihash.bytes, // CIDv0 form
      Buffer.concat([cid.bytes, Uint8Array.of(0)]),
      cid.bytes.subarray(0, 35),
      Uint8Array.from([0x81, 0x00, 0x55, 0x12, 0x20, ...cid.multihash.digest]), // non-minimal varint
      Uint8Array.from([0x01, 0x71, 0x12, 0x20, ...cid.multihash.digest]),
      Uint8Array.from([0x01, 0x55, 0x13, 0x20, ...cid.multihash.digest]),
      Uint8Array.from([0x02, 0x55, 0x12, 0x20, ...cid.multihash.digest]),
    ]
    for (const bytes of bad) {
      expect(() => parseBlobCid(bytes)).toThrow(expect.objectContaining({ reason: 'BlobpackBadCid' }))
    }
    expect(isBlobCid(CID.createV1(0x71, cid.multihash))).toBe(false)
  })
})

describe('blobpack round trip', () => {
  it('writes the header and entry layout of the addendum', async () => {
    expect([BLOBPACK_MAGIC, BLOBPACK_VERSION, BLOBPACK_HEADER_LENGTH]).toEqual([0x41545042, 1, 5])
    expect(blobpackEntryOverhead(36)).toBe(48)
    const data = Uint8Array.of(7, 8, 9)
    const bytes = await pack([data])
    expect(Buffer.from(bytes).toString('hex')).toBe(
      '4154504201' +
        '00000024' +
        Buffer.from(blobCid(data).bytes).toString('hex') +
        '0000000000000003' +
        '070809',
    )
    expect(Buffer.from(await pack([])).toString('hex')).toBe('4154504201')
  })

  it('round-trips an empty pack', async () => {
    const bytes = await pack([])
    expect(blobpackLength([])).toBe(bytes.length)
    const { result, events } = await read(chunked(bytes, 3))
    expect(await result).toEqual({ entries: 0, uniqueBlobs: 0, bytes: 0, cids: [] })
    expect(events).toEqual([])
  })

  it('round-trips empty, 1-byte, small and multi-MiB blobs with exact length', async () => {
    const blobs = [
      randomBytes(1, 4),
      new Uint8Array(0),
      randomBytes(3 * MiB + 17, 5),
      randomBytes(1000, 6),
      randomBytes(5 * MiB, 7),
    ]
    const entries = blobs.map((b) => entryOf(b, 100_003))
    const bytes = await collect(encodeBlobpack(entries))
    expect(blobpackLength(entries)).toBe(bytes.length)
    expect(bytes.length).toBe(5 + blobs.reduce((n, b) => n + 48 + b.length, 0))
    for (const chunkSize of [4093, MiB, bytes.length]) {
      const { result, events, blobs: out } = await read(chunked(bytes, chunkSize))
      const summary = await result
      expect(summary.entries).toBe(5)
      expect(summary.uniqueBlobs).toBe(5)
      expect(summary.bytes).toBe(blobs.reduce((n, b) => n + b.length, 0))
      expect(summary.cids.map(String)).toEqual(blobs.map((b) => blobCid(b).toString()))
      expect(events.filter((e) => e.event === 'abort')).toEqual([])
      expect(out.length).toBe(5)
      out.forEach((b, i) => {
        expect(Buffer.compare(b, blobs[i]!)).toBe(0)
      })
    }
  }, 60_000)

  it('reads a pack split at every possible byte, and one byte at a time', async () => {
    const blobs = [randomBytes(3, 1), new Uint8Array(0), randomBytes(40, 2), randomBytes(3, 1)]
    const bytes = await pack(blobs)
    const expected = blobs.map((b) => blobCid(b).toString())
    const sources: [string, () => AsyncIterable<Uint8Array>][] = [['1-byte chunks', () => chunked(bytes, 1)]]
    for (let cut = 0; cut <= bytes.length; cut++) {
      sources.push([
        `split at ${cut}`,
        async function* () {
          yield bytes.subarray(0, cut)
          yield bytes.subarray(cut)
        },
      ])
    }
    for (const [name, source] of sources) {
      const { result, blobs: out } = await read(source())
      const summary = await result.catch((e: unknown) => {
        throw new Error(`${name}: ${e}`)
      })
      expect(summary.entries, name).toBe(4)
      expect(summary.cids.map(String), name).toEqual(expected.slice(0, 3))
      expect(
        out.map((b) => Buffer.from(b).toString('hex')),
        name,
      ).toEqual(blobs.map((b) => Buffer.from(b).toString('hex')))
    }
  })

  it('verifies every copy of a duplicate CID and flags the later ones', async () => {
    const a = randomBytes(100, 1)
    const b = randomBytes(50, 2)
    const bytes = await pack([a, b, a, a])
    const { result, events } = await read(chunked(bytes, 64))
    expect(await result).toMatchObject({ entries: 4, uniqueBlobs: 2, bytes: 350 })
    expect(events.filter((e) => e.event === 'open').map((e) => e.duplicate)).toEqual([
      false,
      false,
      true,
      true,
    ])
    expect(events.filter((e) => e.event === 'end').length).toBe(4)

    // A corrupted later copy is still caught.
    const corrupt = Uint8Array.from(bytes)
    corrupt[corrupt.length - 1]! ^= 1
    const { err, events: failed } = await expectReason(corrupt, 'BlobpackCidMismatch')
    expect(err.message).toContain(blobCid(a).toString())
    expect(failed.at(-1)).toMatchObject({ event: 'abort', cid: blobCid(a).toString() })
  })

  it('carries a blobpack through an encrypted frame', async () => {
    const { sender, recipient } = await session()
    const blobs = [randomBytes(70_000, 1), randomBytes(10, 2)]
    const entries = blobs.map((b) => entryOf(b, 4096))
    const frames = await encodeAll(sender, [
      { type: CONTENT_TYPE.blobpack, data: encodeBlobpack(entries), length: blobpackLength(entries) },
    ])
    for await (const frame of decodeFrames(chunked(frames, 1000), { keys: recipient })) {
      const { result, blobs: out } = await read(frame.plaintext())
      expect((await result).entries).toBe(2)
      expect(Buffer.compare(out[0]!, blobs[0]!)).toBe(0)
    }
  })
})

describe('blobpack writer', () => {
  it('passes blob chunks through without copying, opening one blob at a time', async () => {
    const log: string[] = []
    const chunks = [randomBytes(10, 1), randomBytes(20, 2)]
    const data = Buffer.concat(chunks)
    const entry = (name: string): BlobpackSourceEntry => ({
      cid: blobCid(data),
      size: data.length,
      async open() {
        log.push(`open ${name}`)
        return (async function* () {
          for (const c of chunks) {
            log.push(`read ${name}`)
            yield c
          }
        })()
      },
    })
    const out: Uint8Array[] = []
    for await (const c of encodeBlobpack([entry('a'), entry('b')])) {
      out.push(c)
      log.push('yield')
    }
    expect(out.filter((c) => chunks.includes(c)).length).toBe(4)
    expect(log).toEqual([
      'yield',
      'open a',
      'yield',
      'read a',
      'yield',
      'read a',
      'yield',
      'open b',
      'yield',
      'read b',
      'yield',
      'read b',
      'yield',
    ])
  })

  it('refuses a blob stream longer or shorter than its declared size', async () => {
    const data = randomBytes(100, 1)
    const longer = { ...entryOf(data), size: 99 }
    const shorter = { ...entryOf(data), size: 101 }
    for (const entry of [longer, shorter]) {
      let emitted = 0
      const drain = async () => {
        for await (const c of encodeBlobpack([entry])) emitted += c.length
      }
      const err = await wireError(drain())
      expect(err.reason).toBe('LengthMismatch')
      // Excess bytes are never emitted, even before the error.
      expect(emitted).toBeLessThanOrEqual(blobpackLength([entry]))
    }
  })

  it('refuses a CID that is not a blob CID and sizes that are not lengths', async () => {
    const data = randomBytes(10, 1)
    const dagCbor = CID.createV1(0x71, blobCid(data).multihash)
    const err = await wireError(collect(encodeBlobpack([{ ...entryOf(data), cid: dagCbor }])))
    expect(err.reason).toBe('BlobpackBadCid')
    await expect(collect(encodeBlobpack([{ ...entryOf(data), size: -1 }]))).rejects.toThrow(RangeError)
    expect(() => blobpackLength([{ cid: blobCid(data), size: 2 ** 53 }])).toThrow(RangeError)
  })
})

describe('blobpack reader rejections', () => {
  const data = randomBytes(20, 1)
  const cid = cidV1Raw(data)

  it('rejects a bad magic number', async () => {
    await expectReason(rawPack([], [0x43, 0x41, 0x52, 0x31, 0x01]), 'BlobpackBadMagic')
  })

  it('rejects unknown versions', async () => {
    for (const version of [0, 2, 255]) {
      await expectReason(rawPack([], [0x41, 0x54, 0x50, 0x42, version]), 'BlobpackBadVersion')
    }
  })

  it('rejects a CID length over 512 before reading the CID', async () => {
    const bytes = rawPack([{ cid: new Uint8Array(0), cidLength: 513 }]).subarray(0, 9)
    await expectReason(bytes, 'BlobpackCidTooLong')
    await expectReason(rawPack([{ cid: new Uint8Array(0), cidLength: 0xffff_ffff }]), 'BlobpackCidTooLong')
    // 512 itself is allowed by the bound (and then fails as a CID).
    await expectReason(rawPack([{ cid: new Uint8Array(512) }]), 'BlobpackBadCid')
  })

  it('rejects CIDs that are not exactly one CIDv1/raw/sha2-256', async () => {
    const digest = blobCid(data).multihash.digest
    const bad = [
      new Uint8Array(0),
      Uint8Array.from([0x12, 0x20, ...digest]), // CIDv0
      Uint8Array.from([0x01, 0x71, 0x12, 0x20, ...digest]), // dag-cbor
      Uint8Array.from([0x01, 0x55, 0x1e, 0x20, ...digest]), // blake3
      Uint8Array.from([0x01, 0x55, 0x12, 0x1f, ...digest.subarray(1)]), // short digest
      Buffer.concat([cid, Uint8Array.of(0)]), // not consumed by the declared length
    ]
    for (const cidBytes of bad) {
      const { events } = await expectReason(rawPack([{ cid: cidBytes, data }]), 'BlobpackBadCid')
      expect(events).toEqual([])
    }
  })

  it('rejects blobs over maxBlobSize before reading their data', async () => {
    const header = rawPack([{ cid, size: 21n }]) // no data at all: the check must come first
    const { events } = await expectReason(header, 'BlobpackBlobTooLarge', { maxBlobSize: 20 })
    expect(events).toEqual([])
    await expectReason(rawPack([{ cid, size: 2n ** 64n - 1n }]), 'BlobpackBlobTooLarge')
    const atDefault = rawPack([{ cid, size: BigInt(LIMITS.defaultMaxBlobSize) + 1n }])
    await expectReason(atDefault, 'BlobpackBlobTooLarge')
    const { result } = await read(chunked(rawPack([{ cid, data }]), 5), { maxBlobSize: 20 })
    expect((await result).entries).toBe(1)
  })

  it('rejects empty blobs only when asked to', async () => {
    const bytes = await pack([new Uint8Array(0)])
    await expectReason(bytes, 'BlobpackEmptyBlob', { rejectEmptyBlobs: true })
    const { result } = await read(chunked(bytes, 5))
    expect((await result).entries).toBe(1)
  })

  it('rejects a plaintext ending anywhere but at an entry boundary', async () => {
    const blobs = [randomBytes(5, 1), new Uint8Array(0), randomBytes(7, 2)]
    const bytes = await pack(blobs)
    const boundaries = new Map<number, number>([[5, 0]])
    let offset = 5
    blobs.forEach((b, i) => {
      offset += 48 + b.length
      boundaries.set(offset, i + 1)
    })
    for (let cut = 0; cut < bytes.length; cut++) {
      const truncated = bytes.subarray(0, cut)
      const entries = boundaries.get(cut)
      if (entries !== undefined) {
        const { result } = await read(chunked(truncated, 3))
        expect((await result).entries, `cut ${cut}`).toBe(entries)
      } else {
        const { events } = await expectReason(truncated, 'BlobpackTruncated')
        const opened = events.filter((e) => e.event === 'open').length
        const closed = events.filter((e) => e.event !== 'open').length
        expect(opened, `cut ${cut}: every opened sink is ended or aborted`).toBe(closed)
      }
    }
  })

  it('rejects data that does not hash to its CID, naming it', async () => {
    const other = randomBytes(20, 2)
    const bytes = rawPack([{ cid, data: other }])
    const { err, events } = await expectReason(bytes, 'BlobpackCidMismatch')
    expect(err.message).toContain(blobCid(data).toString())
    expect(events.map((e) => e.event)).toEqual(['open', 'abort'])
    expect(events[1]!.reason).toBe(err)
  })

  it('refuses an invalid maxBlobSize option', async () => {
    const { result } = await read(chunked(await pack([]), 5), { maxBlobSize: -1 })
    await expect(result).rejects.toThrow(RangeError)
  })
})

describe('blobpack sinks', () => {
  const blobs = [randomBytes(30, 1), randomBytes(30, 2), randomBytes(30, 3)]

  it('ends each sink after its data and aborts none on success', async () => {
    const { result, events } = await read(chunked(await pack(blobs), 8))
    await result
    expect(events.map((e) => e.event)).toEqual(['open', 'end', 'open', 'end', 'open', 'end'])
  })

  it('aborts only the failing sink, never ending it', async () => {
    const bytes = await pack(blobs)
    bytes[5 + 48 + 30 + 48 + 10]! ^= 0x80 // inside the second blob
    const { events } = await expectReason(bytes, 'BlobpackCidMismatch')
    expect(events.map((e) => e.event)).toEqual(['open', 'end', 'open', 'abort'])
  })

  it('aborts the sink with the error of a failing write or end, and rethrows it', async () => {
    const bytes = await pack(blobs)
    for (const sink of [
      { write: () => Promise.reject(new Error('disk full')) },
      {
        end: () => {
          throw new Error('disk full')
        },
      },
    ]) {
      const { result, events } = await read(chunked(bytes, 8), { sink })
      await expect(result).rejects.toThrow('disk full')
      const last = events.at(-1)!
      expect(last.event).toBe('abort')
      expect(last.reason?.message).toBe('disk full')
    }
  })

  it('stops the source when it fails', async () => {
    const bytes = await pack(blobs)
    bytes[0] = 0
    let returned = false
    const source = {
      [Symbol.asyncIterator]() {
        const it = chunked(bytes, 8)
        return {
          next: () => it.next(),
          async return() {
            returned = true
            return { done: true as const, value: undefined }
          },
        }
      },
    }
    const { result } = await read(source)
    await wireError(result)
    expect(returned).toBe(true)
  })
})
