import { describe, expect, it } from 'vitest'
import { formatSizeHint, parseSizeHint } from '../src/size-hint.ts'

describe('size-hint header (extension)', () => {
  it('round-trips', () => {
    const hint = { bytes: 5 * 2 ** 40, blobs: 123_456 }
    expect(formatSizeHint(hint)).toBe('bytes=5497558138880, blobs=123456')
    expect(parseSizeHint(formatSizeHint(hint))).toEqual(hint)
    expect(parseSizeHint('blobs=0,bytes=10')).toEqual({ bytes: 10, blobs: 0 })
  })

  it('ignores what it cannot read rather than guessing', () => {
    for (const bad of [
      undefined,
      '',
      'bytes=10',
      'bytes=10, blobs=-1',
      'bytes=1e3, blobs=1',
      'bytes=10, blobs=1, bytes=11',
      'bytes=10, blobs=1, files=2',
      'bytes=99999999999999999, blobs=1',
    ])
      expect(parseSizeHint(bad), String(bad)).toBeUndefined()
  })
})
