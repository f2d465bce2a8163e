import { describe, expect, it } from 'vitest'
import { blobBytes, duration, type SizeEstimate, sizeSentence } from '../src/migrate-size-estimate.ts'

const MiB = 1048576
const estimate = (over: Partial<SizeEstimate>): SizeEstimate => ({
  blobs: 300,
  allListed: true,
  sized: 300,
  sizedBytes: 300 * MiB,
  notServed: 0,
  ...over,
})

/** Issue 18 item 7: the checklist's size, honestly labelled: exact, "about", or "at least". */
describe('the size before the move', () => {
  it('is exact for images and files when every one was listed and sized, and a lower bound in all', () => {
    const e = estimate({})
    expect(blobBytes(e)).toEqual({ bytes: 300 * MiB, exact: true })
    // 300 MiB at 10 MiB/s and 300 requests at 40 a second: 37.5 s.
    expect(sizeSentence(e)).toBe(
      '300 images and files (300.0 MiB), plus your posts, likes, follows and settings. Copying takes less than a minute at 10.0 MiB/s, a common speed between two servers; the next page shows the real speed and time left.',
    )
    expect(sizeSentence(estimate({ blobs: 3000, sized: 3000, sizedBytes: 3000 * MiB }))).toContain(
      'Copying takes about 6 minutes',
    )
  })

  it('says "about" when only some were sized in time, extrapolated over those the server can send', () => {
    const e = estimate({ sized: 100, sizedBytes: 50 * MiB, notServed: 3 })
    expect(blobBytes(e)).toEqual({ bytes: Math.round(0.5 * MiB * 297), exact: false })
    expect(sizeSentence(e)).toContain('300 images and files (about 148.5 MiB)')
    expect(sizeSentence(e)).toContain('could not send 3 of them just now')
  })

  it('says "at least" when the list itself was cut short', () => {
    const e = estimate({ blobs: 5000, allListed: false, sized: 5000, sizedBytes: 5000 * MiB })
    expect(sizeSentence(e)).toContain('at least 5,000 images and files (about 4.88 GiB)')
    expect(sizeSentence(e)).toContain('Copying takes at least 10 minutes')
  })

  it('names no size it does not know, and says when there are no images', () => {
    expect(sizeSentence(estimate({ sized: 0, sizedBytes: 0 }))).toMatch(/^300 images and files, plus/)
    expect(sizeSentence(estimate({ blobs: 0, sized: 0, sizedBytes: 0 }))).toBe(
      'No images or files: only your posts, likes, follows and settings are copied.',
    )
    expect(sizeSentence(estimate({ blobs: 1, sized: 1, sizedBytes: 86_000 }))).toMatch(
      /^1 image or file \(84 KiB\)/,
    )
  })

  it('tells durations in words a person reads', () => {
    expect(duration(59)).toBe('less than a minute')
    expect(duration(80)).toBe('about a minute')
    expect(duration(600)).toBe('about 10 minutes')
    expect(duration(3599)).toBe('about 1 h 0 min')
    expect(duration(7300)).toBe('about 2 h 2 min')
  })
})
