import { describe, expect, it } from 'vitest'
import type { InboundTransfer } from '../src/inbound-transfer.ts'
import { pace } from '../src/migrate-html.ts'
import { PaceWindow } from '../src/migrate-pace-window.ts'

const MiB = 1048576
const at = (createdAt: number, bytesReceived: number) =>
  ({
    transferId: 't1',
    createdAt,
    progress: { bytesReceived, blobsReceived: 0, blobsReconciled: 0 },
    expected: { bytes: 100 * MiB, blobs: 1 },
  }) as InboundTransfer

/** Issue 18 item 7: speed and time left are right after a pause, too. */
describe('the pace window', () => {
  it('measures a fresh move from its start, then from a window that moves every 15 s', () => {
    const window = new PaceWindow()
    const start = 1_000_000
    expect(window.since(at(start, 0), start + 1000, true)).toBeUndefined()
    expect(window.since(at(start, 5 * MiB), start + 10_000, true)).toBeUndefined()
    // 16 s after the first look: the first look's sample is the base.
    expect(window.since(at(start, 16 * MiB), start + 17_000, true)).toEqual({
      at: start + 1000,
      bytes: 0,
      blobs: 0,
    })
  })

  it('measures a move first looked at long after its start (resumed after a pause) from that look', () => {
    const window = new PaceWindow()
    const created = 1_000_000
    const back = created + 3_600_000
    const first = window.since(at(created, 50 * MiB), back, true)
    expect(first).toEqual({ at: back, bytes: 50 * MiB, blobs: 0 })
    const later = at(created, 60 * MiB)
    expect(pace(later, back + 10_000, undefined, window.since(later, back + 10_000, true))).toBe(
      '1.0 MiB/s, less than a minute left',
    )
  })

  it('forgets a transfer that is no longer copying, and starts over when the copy did', () => {
    const window = new PaceWindow()
    const created = 1_000_000
    window.since(at(created, 50 * MiB), created + 120_000, true)
    expect(window.since(at(created, 50 * MiB), created + 130_000, false)).toBeUndefined()
    // Fewer bytes than before: a new base at this look.
    window.since(at(created, 50 * MiB), created + 140_000, true)
    expect(window.since(at(created, 1 * MiB), created + 150_000, true)).toEqual({
      at: created + 150_000,
      bytes: MiB,
      blobs: 0,
    })
  })
})
