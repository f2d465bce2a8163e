import { describe, expect, it } from 'vitest'
import { CONTENT_TYPE } from '../src/content-types.ts'
import { WireError } from '../src/errors.ts'
import { type DecodedFrame, decodeFrames } from '../src/frame-decoder.ts'
import { FrameEncoder } from '../src/frame-encoder.ts'
import { FrameKeys } from '../src/key-schedule.ts'
import { chunked, DID, encodeAll, randomBytes, session, TRANSFER_ID } from './helpers.ts'

async function decodeAll(bytes: Uint8Array, keys: FrameKeys, chunkSize = 7919) {
  const frames: { frameNumber: number; contentType: string; data: Uint8Array }[] = []
  for await (const frame of decodeFrames(chunked(bytes, chunkSize), { keys })) {
    const parts: Uint8Array[] = []
    for await (const c of frame.plaintext()) parts.push(Uint8Array.from(c))
    frames.push({
      frameNumber: frame.frameNumber,
      contentType: frame.contentType,
      data: Buffer.concat(parts),
    })
  }
  return frames
}

async function expectWireError(p: Promise<unknown>, reason: string) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(WireError)
  expect((err as WireError).reason).toBe(reason)
}

describe.each(['HPKE-3', 'HPKE-4'] as const)('frame codec with %s', (algorithm) => {
  it('round-trips frames of every kind, including empty and multi-MiB ones', async () => {
    const { sender, recipient } = await session(algorithm)
    const car = randomBytes(3 * 1024 * 1024 + 17, 3)
    const input = [
      { type: CONTENT_TYPE.repoCar, data: car },
      { type: CONTENT_TYPE.blobpack, data: randomBytes(1000, 5) },
      { type: CONTENT_TYPE.preferences, data: new Uint8Array(0) },
      { type: CONTENT_TYPE.accountState, data: randomBytes(5, 9) },
    ]
    const bytes = await encodeAll(sender, input)
    expect(bytes.length).toBe(input.reduce((n, f) => n + 12 + f.type.length + f.data.length + 16, 0))
    for (const chunkSize of [4093, 65536, bytes.length]) {
      const frames = await decodeAll(bytes, recipient, chunkSize)
      expect(frames.map((f) => f.frameNumber)).toEqual([0, 1, 2, 3])
      expect(frames.map((f) => f.contentType)).toEqual(input.map((f) => f.type))
      frames.forEach((f, i) => {
        expect(Buffer.compare(f.data, input[i]!.data)).toBe(0)
      })
    }
  }, 120_000)

  it('decodes whatever the chunking, down to one byte at a time', async () => {
    const { sender, recipient } = await session(algorithm)
    const input = [
      { type: CONTENT_TYPE.repoCar, data: randomBytes(700, 3) },
      { type: CONTENT_TYPE.accountState, data: new Uint8Array(0) },
    ]
    const bytes = await encodeAll(sender, input)
    for (const chunkSize of [1, 2, 3, 11, 16, 17]) {
      const frames = await decodeAll(bytes, recipient, chunkSize)
      expect(frames.map((f) => Buffer.from(f.data).toString('hex'))).toEqual(
        input.map((f) => Buffer.from(f.data).toString('hex')),
      )
    }
  })

  it('lays out a frame as header, ciphertext, 16-byte tag', async () => {
    const { sender } = await session(algorithm)
    const bytes = await encodeAll(sender, [{ type: 'x/y', data: new Uint8Array(10) }])
    const view = new DataView(bytes.buffer, bytes.byteOffset)
    expect(view.getUint32(0)).toBe(0)
    expect(view.getUint32(4)).toBe(3)
    expect(Buffer.from(bytes.subarray(8, 11)).toString()).toBe('x/y')
    expect(view.getUint32(11)).toBe(26)
    expect(bytes.length).toBe(15 + 26)
  })

  it('streams a frame from chunks and refuses a length that does not match', async () => {
    const { sender, recipient } = await session(algorithm)
    const data = randomBytes(100_000, 4)
    const bytes = await encodeAll(sender, [
      { type: CONTENT_TYPE.blobpack, data: chunked(data, 333), length: data.length },
    ])
    const [frame] = await decodeAll(bytes, recipient)
    expect(Buffer.compare(frame!.data, data)).toBe(0)

    const encoder = new FrameEncoder(sender)
    const drain = async (g: AsyncIterable<unknown>) => {
      for await (const _ of g);
    }
    await expectWireError(
      drain(encoder.encodeFrame('a/b', chunked(data, 1000), data.length - 1)),
      'LengthMismatch',
    )
    // A failed encoder refuses to go on: the response must be aborted, not continued.
    await expectWireError(drain(encoder.encodeFrame('a/b', new Uint8Array(1), 1)), 'LengthMismatch')
    const short = new FrameEncoder(sender)
    await expectWireError(
      drain(short.encodeFrame('a/b', chunked(data, 1000), data.length + 1)),
      'LengthMismatch',
    )
  })
})

describe('frame decoder rejects malformed streams', () => {
  const frames = [
    { type: CONTENT_TYPE.repoCar, data: randomBytes(5000, 1) },
    { type: CONTENT_TYPE.blobpack, data: randomBytes(3000, 2) },
  ]
  const setup = async () => {
    const s = await session('HPKE-3')
    return { ...s, bytes: await encodeAll(s.sender, frames) }
  }
  const frame1Start = 12 + frames[0]!.type.length + frames[0]!.data.length + 16

  it('detects a flipped bit anywhere in the ciphertext or tag', async () => {
    const { recipient, bytes } = await setup()
    for (const offset of [
      12 + frames[0]!.type.length + 4,
      frame1Start - 1,
      bytes.length - 1,
      bytes.length - 20,
    ]) {
      const bad = Uint8Array.from(bytes)
      bad[offset]! ^= 0x01
      await expectWireError(decodeAll(bad, recipient), 'FrameAuthFailed')
    }
  })

  it('binds the content type, did and transferId (AAD)', async () => {
    const { recipient, bytes } = await setup()
    const swapped = Uint8Array.from(bytes)
    // Same length type: "application/vnd.ipld.car" -> "application/vnd.ipld.cas"
    swapped[8 + frames[0]!.type.length - 1] = 's'.charCodeAt(0)
    await expectWireError(decodeAll(swapped, recipient), 'FrameAuthFailed')
    for (const keys of [
      new FrameKeys(recipient.algorithm, 'did:plc:other', TRANSFER_ID, recipient.transferSecret),
      new FrameKeys(
        recipient.algorithm,
        DID,
        '019537a1-7e28-7def-8c56-3a8b69e2d472',
        recipient.transferSecret,
      ),
    ]) {
      await expectWireError(decodeAll(bytes, keys), 'FrameAuthFailed')
    }
  })

  it('refuses reordered, skipped or renumbered frames', async () => {
    const { recipient, bytes } = await setup()
    const reordered = Buffer.concat([bytes.subarray(frame1Start), bytes.subarray(0, frame1Start)])
    await expectWireError(decodeAll(reordered, recipient), 'FrameOutOfOrder')
    await expectWireError(decodeAll(bytes.subarray(frame1Start), recipient), 'FrameOutOfOrder')
    const renumbered = Uint8Array.from(bytes)
    new DataView(renumbered.buffer).setUint32(frame1Start, 0)
    await expectWireError(decodeAll(renumbered, recipient), 'FrameOutOfOrder')
  })

  it('names every truncation point', async () => {
    const { recipient, bytes } = await setup()
    const cases: [number, string][] = [
      [3, 'TruncatedHeader'],
      [10, 'TruncatedHeader'],
      [8 + frames[0]!.type.length + 2, 'TruncatedHeader'],
      [100, 'TruncatedFrame'],
      [frame1Start - 5, 'TruncatedFrame'],
      [frame1Start + 1, 'TruncatedHeader'],
      [bytes.length - 1, 'TruncatedFrame'],
    ]
    for (const [at, reason] of cases)
      await expectWireError(decodeAll(bytes.subarray(0, at), recipient), reason)
    // A cut exactly at a frame boundary is indistinguishable from the end in plain 0014 (see spec/errata.md).
    expect(await decodeAll(bytes.subarray(0, frame1Start), recipient)).toHaveLength(1)
  })

  it('bounds content types and frame sizes before reading them', async () => {
    const { recipient, bytes } = await setup()
    const longType = Uint8Array.from(bytes)
    new DataView(longType.buffer).setUint32(4, 100_000)
    await expectWireError(decodeAll(longType, recipient), 'ContentTypeTooLong')
    const zeroType = Uint8Array.from(bytes)
    new DataView(zeroType.buffer).setUint32(4, 0)
    await expectWireError(decodeAll(zeroType, recipient), 'ContentTypeTooLong')
    const badUtf8 = Uint8Array.from(bytes)
    badUtf8[8] = 0xff
    await expectWireError(decodeAll(badUtf8, recipient), 'InvalidContentType')
    const tiny = Uint8Array.from(bytes)
    new DataView(tiny.buffer).setUint32(8 + frames[0]!.type.length, 15)
    await expectWireError(decodeAll(tiny, recipient), 'TruncatedFrame')
    const frames2 = decodeFrames(chunked(bytes, 4096), { keys: recipient, maxCiphertextLength: 4000 })
    await expectWireError(
      (async () => {
        for await (const f of frames2) for await (const _ of f.plaintext());
      })(),
      'FrameTooLarge',
    )
  })

  it('verifies frames the consumer skips, and refuses a frame abandoned midway', async () => {
    const { recipient, bytes } = await setup()
    const bad = Uint8Array.from(bytes)
    bad[50]! ^= 1
    const skipAll = async () => {
      let n = 0
      for await (const _ of decodeFrames(chunked(bad, 1000), { keys: recipient })) n++
      return n
    }
    await expectWireError(skipAll(), 'FrameAuthFailed')
    const abandon = async () => {
      for await (const f of decodeFrames(chunked(bytes, 1000), { keys: recipient })) {
        for await (const _ of (f as DecodedFrame).plaintext()) break
      }
    }
    await expect(abandon()).rejects.toThrow(/abandoned/)
  })
})
