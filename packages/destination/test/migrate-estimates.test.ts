import { describe, expect, it } from 'vitest'
import type { InboundTransfer } from '../src/inbound-transfer.ts'
import { Estimates } from '../src/migrate-estimates.ts'
import { newTransfer } from '../src/transfer-admission.ts'

const DID = 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa'
const counted = { blobs: 3, allListed: true, sized: 3, sizedBytes: 300, notServed: 0 }
const copying = (over: Partial<InboundTransfer> = {}): InboundTransfer => ({
  ...newTransfer(DID, 'https://old.example'),
  status: 'importing',
  stage: 'streaming',
  ...over,
})

/** The checklist's count follows the account to its progress page, and only while it helps. */
describe('the estimates /migrate keeps', () => {
  it("binds the checklist's estimate to the transfer the account's sign-in started", () => {
    const estimates = new Estimates()
    estimates.remember(DID, counted)
    const t = copying()
    expect(estimates.of(t)).toEqual(counted)
    // Bound: a second look finds it by transfer.
    expect(estimates.of(t)).toEqual(counted)
    // Another transfer of the same account (a move started over) starts without it.
    expect(estimates.of(copying())).toBeUndefined()
  })

  it('drops it once the source gave a size hint, or the transfer ended', () => {
    const estimates = new Estimates()
    estimates.remember(DID, counted)
    const t = copying()
    estimates.of(t)
    expect(estimates.of({ ...t, expected: { bytes: 1000, blobs: 3 } })).toBeUndefined()
    estimates.remember(DID, counted)
    const u = copying()
    estimates.of(u)
    expect(estimates.of({ ...u, status: 'completed', stage: 'activated' })).toBeUndefined()
    expect(estimates.of(u)).toBeUndefined()
  })

  it('does not lend an estimate made more than an hour before the transfer', () => {
    const estimates = new Estimates()
    estimates.remember(DID, counted)
    expect(estimates.of(copying({ createdAt: Date.now() + 61 * 60_000 }))).toBeUndefined()
  })
})
