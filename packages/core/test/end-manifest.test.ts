import { encode } from 'cborg'
import { describe, expect, it } from 'vitest'
import { decodeEndManifest, type EndManifest, encodeEndManifest, WireError } from '../src/index.ts'

const manifest: EndManifest = {
  frames: 4,
  bytes: 123_456,
  blobs: 17,
  repoRev: '3lbqzvvtg2c2a',
  repoCommit: 'bafyreihjdjlqzgozyj3tzeyqgjz4vdlqnr2ifn6zgw5hxtvr4gylxdfn2i',
  deferredBlobs: ['bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy'],
}

describe('end manifest codec', () => {
  it('round-trips and is deterministic', () => {
    const bytes = encodeEndManifest(manifest)
    expect(decodeEndManifest(bytes)).toEqual(manifest)
    const { deferredBlobs, ...rest } = manifest
    expect(encodeEndManifest({ deferredBlobs, ...rest })).toEqual(bytes)
  })

  it('ignores unknown fields (later versions may add some)', () => {
    expect(decodeEndManifest(encode({ ...manifest, resumeCursor: 'x' }))).toEqual(manifest)
  })

  it.each([
    ['not CBOR', new Uint8Array([0xff, 0x00])],
    ['not a map', encode([1, 2])],
    ['a negative count', encode({ ...manifest, frames: -1 })],
    ['a fractional count', encode({ ...manifest, bytes: 1.5 })],
    ['a missing rev', encode({ ...manifest, repoRev: 7 })],
    ['deferred blobs not strings', encode({ ...manifest, deferredBlobs: [1] })],
    ['trailing bytes', new Uint8Array([...encodeEndManifest(manifest), 0x00])],
  ])('rejects %s', (_name, bytes) => {
    expect(() => decodeEndManifest(bytes)).toThrowError(WireError)
    try {
      decodeEndManifest(bytes)
    } catch (err) {
      expect((err as WireError).reason).toBe('InvalidEndManifest')
    }
  })
})
