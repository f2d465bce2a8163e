import { describe, expect, it } from 'vitest'
import type { InboundTransfer } from '../src/inbound-transfer.ts'
import { progressBar, received } from '../src/migrate-html.ts'

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
    expect(received(25 * MiB, 100 * MiB)).toBe('25.0 of about 100.0 MiB (25%)')
  })

  it('never claims 100% or more before the end: the hint leaves small frames out', () => {
    const t = transfer(101 * MiB, { bytes: 100 * MiB, blobs: 3 })
    expect(progressBar(t)).toContain(`value="${100 * MiB}">99%</progress>`)
    expect(received(101 * MiB, 100 * MiB)).toBe('101.0 of about 100.0 MiB (99%)')
  })
})
