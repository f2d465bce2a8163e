import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import {
  ArchiveError,
  generateArchiveKeys,
  openObject,
  SEALED_FRAME_BYTES,
  sealObject,
  writerKeys,
} from '../src/index.ts'

const did = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz'
const address = { did, key: `${did}/blobs/x`, contentType: 'application/octet-stream' }

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const chunk of source) parts.push(chunk)
  return Buffer.concat(parts)
}

async function reason(promise: Promise<unknown>): Promise<string> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  if (!(err instanceof ArchiveError)) throw new Error(`expected an ArchiveError, got ${String(err)}`)
  return err.reason
}

describe('sealed archive objects', () => {
  it('round-trip compressed and raw, empty, one frame and many frames', async () => {
    const keys = await generateArchiveKeys()
    const text = Buffer.from('{"a":1}'.repeat(400_000)) // compresses well, several MiB
    for (const plaintext of [
      Buffer.alloc(0),
      randomBytes(1000),
      randomBytes(SEALED_FRAME_BYTES * 2 + 5),
      text,
    ]) {
      for (const compress of [false, true]) {
        const sealed = await collect(sealObject(keys, { ...address, compress }, [plaintext]))
        expect((await collect(openObject(keys, address, [sealed]))).equals(plaintext)).toBe(true)
        if (compress && plaintext === text) expect(sealed.length).toBeLessThan(plaintext.length / 50)
      }
    }
  })

  it('refuses every changed byte, a cut, an object under another name or account, and a key without d', async () => {
    const keys = await generateArchiveKeys()
    const plaintext = randomBytes(SEALED_FRAME_BYTES + 300)
    const sealed = await collect(sealObject(keys, { ...address, compress: false }, [plaintext]))
    // header, enc, frame 0 header, frame 0 body, frame 1 tag, end frame
    for (const at of [
      0,
      5,
      6,
      10,
      41,
      60,
      5000,
      SEALED_FRAME_BYTES + 100,
      sealed.length - 40,
      sealed.length - 1,
    ]) {
      const changed = Buffer.from(sealed)
      changed[at] = (changed[at] as number) ^ 0x01
      expect(await reason(collect(openObject(keys, address, [changed]))), `byte ${at}`).toBe('ObjectCorrupt')
    }
    // Cut at the boundary before the end frame: every frame left verifies, the end is missing.
    const endFrame = sealed.length - (8 + 'application/vnd.atproto.archive.end+cbor'.length + 4 + 16 + 50)
    for (const cut of [sealed.length - 1, 40, endFrame]) {
      expect(await reason(collect(openObject(keys, address, [sealed.subarray(0, cut)])))).toBe(
        'ObjectCorrupt',
      )
    }
    expect(await reason(collect(openObject(keys, { ...address, key: `${did}/blobs/y` }, [sealed])))).toBe(
      'ObjectCorrupt',
    )
    expect(await reason(collect(openObject(keys, { ...address, did: 'did:plc:other' }, [sealed])))).toBe(
      'ObjectCorrupt',
    )
    expect(
      await reason(collect(openObject(keys, { ...address, contentType: 'application/json' }, [sealed]))),
    ).toBe('ObjectCorrupt')
    expect(await reason(collect(openObject(writerKeys(keys), address, [sealed])))).toBe('InvalidKey')
    expect(await reason(collect(openObject(await generateArchiveKeys(), address, [sealed])))).toBe(
      'ObjectCorrupt',
    )
  })
})
