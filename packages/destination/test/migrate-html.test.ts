import { describe, expect, it } from 'vitest'
import { size } from '../src/html-page.ts'
import type { InboundTransfer } from '../src/inbound-transfer.ts'
import { counters, pace, progressBar, received } from '../src/migrate-html.ts'
import type { SizeEstimate } from '../src/migrate-size-estimate.ts'

const MiB = 1048576
const transfer = (bytesReceived: number, expected?: { bytes: number; blobs: number }) =>
  ({ progress: { bytesReceived }, ...(expected && { expected }) }) as InboundTransfer

describe('/migrate progress', () => {
  it('is indeterminate without a size hint', () => {
    expect(progressBar(transfer(5 * MiB))).toBe('<progress aria-label="Transfer progress"></progress>')
    expect(received(5 * MiB)).toBe('5.0 MiB')
  })

  it('shows how far along the hinted size the pull is', () => {
    const t = transfer(25 * MiB, { bytes: 100 * MiB, blobs: 3 })
    expect(progressBar(t)).toContain(`max="${100 * MiB}" value="${25 * MiB}">25%</progress>`)
    expect(received(25 * MiB, 100 * MiB)).toBe('25.0 MiB of about 100.0 MiB (25%)')
  })

  it('never claims 100% or more before the end: the hint leaves small frames out', () => {
    const t = transfer(101 * MiB, { bytes: 100 * MiB, blobs: 3 })
    expect(progressBar(t)).toContain(`value="${100 * MiB}">99%</progress>`)
    // Not "of about" a smaller number than what arrived.
    expect(received(101 * MiB, 100 * MiB)).toBe('101.0 MiB (nearly done)')
  })

  it('once the copy is done, says what arrived without the hint\'s "of about" (it read as 84% copied)', () => {
    const t = (stage: InboundTransfer['stage']) =>
      ({
        stage,
        transferId: 't',
        progress: {
          bytesReceived: 63 * 1024,
          blobsReceived: 4,
          blobsReconciled: 0,
          framesReceived: 9,
          records: 9,
        },
        expected: { bytes: 74 * 1024, blobs: 4 },
      }) as InboundTransfer
    expect(counters(t('streaming'))).toContain('63 KiB of about 74 KiB (85%)')
    expect(counters(t('awaitingPlcToken'))).toContain('<dd data-field="bytes">63 KiB</dd>')
  })

  it('says small accounts in KiB and large ones in GiB (not "0.0 of about 0.0 MiB")', () => {
    expect(size(86_000)).toBe('84 KiB')
    expect(received(86_000, 87_000)).toBe('84 KiB of about 85 KiB (98%)')
    expect(size(3 * 1024 * MiB)).toBe('3.00 GiB')
  })

  it('gives speed and time left from the average since the start, once there is something to go on', () => {
    const started = (bytesReceived: number, secondsAgo: number, expected?: number) =>
      ({
        createdAt: 1_000_000 - secondsAgo * 1000,
        progress: { bytesReceived },
        ...(expected && { expected: { bytes: expected, blobs: 1 } }),
      }) as InboundTransfer
    expect(pace(started(MiB, 1), 1_000_000)).toBe('')
    expect(pace(started(10 * MiB, 10, 40 * MiB), 1_000_000)).toBe('1.0 MiB/s, less than a minute left')
    expect(pace(started(10 * MiB, 10, 610 * MiB), 1_000_000)).toBe('1.0 MiB/s, about 10 minutes left')
    expect(pace(started(10 * MiB, 10, 7210 * MiB), 1_000_000)).toBe('1.0 MiB/s, about 2 h 0 min left')
    expect(pace(started(10 * MiB, 10), 1_000_000)).toBe('1.0 MiB/s')
    expect(pace(started(10 * MiB, 10, 70 * MiB), 1_000_000)).toBe('1.0 MiB/s, about a minute left')
  })

  it('measures a resumed move from a sample after the pause, not from its start', () => {
    // Created an hour ago, 50 of 100 MiB then; 10 MiB more in the 10 s since the sample.
    const t = {
      createdAt: 1_000_000 - 3_600_000,
      progress: { bytesReceived: 60 * MiB, blobsReceived: 0, blobsReconciled: 0 },
      expected: { bytes: 100 * MiB, blobs: 1 },
    } as InboundTransfer
    const since = { at: 1_000_000 - 10_000, bytes: 50 * MiB, blobs: 0 }
    expect(pace(t, 1_000_000, undefined, since)).toBe('1.0 MiB/s, less than a minute left')
    // From the start, the hour's pause would read as a crawl.
    expect(pace(t, 1_000_000)).toBe('17 KiB/s, about 40 minutes left')
  })

  it('without a size hint, goes by the images and files the checklist counted (plain and draft sources)', () => {
    const copying = (blobsReceived: number) =>
      ({
        createdAt: 1_000_000 - 20_000,
        progress: {
          bytesReceived: 20 * MiB,
          blobsReceived,
          blobsReconciled: 0,
          framesReceived: 0,
          records: 9,
        },
      }) as InboundTransfer
    const counted: SizeEstimate = {
      blobs: 300,
      allListed: true,
      sized: 300,
      sizedBytes: 300 * MiB,
      notServed: 0,
    }
    // 100 of 300 in 20 s: 200 more take about 40 s.
    expect(pace(copying(100), 1_000_000, counted)).toBe('1.0 MiB/s, less than a minute left')
    expect(pace(copying(10), 1_000_000, counted)).toBe('1.0 MiB/s, about 10 minutes left')
    expect(progressBar(copying(150), counted)).toBe(
      '<progress aria-label="Images and files copied" data-field="bar" max="300" value="150">50%</progress>',
    )
    expect(counters(copying(150), counted)).toContain('<dd data-field="blobs">150 of 300</dd>')
    // A count that was cut short by the time budget is a lower bound, and gives no bar.
    const partly = { ...counted, allListed: false }
    expect(counters(copying(150), partly)).toContain('150 of at least 300')
    expect(progressBar(copying(150), partly)).toBe('<progress aria-label="Transfer progress"></progress>')
    // More arrived than was counted (new posts since the checklist): no "of", no bar, speed only.
    expect(counters(copying(301), counted)).toContain('<dd data-field="blobs">301</dd>')
    expect(progressBar(copying(301), counted)).toBe('<progress aria-label="Transfer progress"></progress>')
    expect(pace(copying(301), 1_000_000, counted)).toBe('1.0 MiB/s')
  })
})
