import * as plc from '@did-plc/lib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import {
  buildReport,
  DRAFT_COMPLETION_CHECKS,
  destinationChecks,
  draftDestinationChecks,
  draftSourceChecks,
  formatTable,
  runChecks,
  sourceChecks,
} from '../src/suite/index.ts'
import { type SelfDestination, startSelfDestination } from '../src/suite/self-destination.ts'
import { type SelfSource, startSelfSource } from '../src/suite/self-source.ts'

describe('conformance suite against our own source', () => {
  let plcDir: PlcDirectory
  let self: SelfSource
  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    self = await startSelfSource({ plc: plcDir })
  }, 60_000)
  afterAll(async () => {
    await self?.close()
    await plcDir?.close()
  })

  it('passes every source check', async () => {
    const results = await runChecks(sourceChecks, self.target)
    const report = buildReport({ role: 'source', url: self.target.url }, new Date(), results)
    console.log(formatTable(report))
    expect(results.filter((r) => r.status === 'fail')).toEqual([])
    expect(results.filter((r) => r.status === 'skip').map((r) => r.id)).toEqual([
      'source.transport.https',
      'source.complete.plc-operation',
      'source.errors.account-deactivated',
    ])
  })

  it('with --complete: a valid PLC operation, submitted; then AccountDeactivated', async () => {
    const t = self.target
    await self.enableCompletion()
    const results = await runChecks(sourceChecks, t, {
      only: ['source.complete', 'source.errors.account-deactivated', 'source.errors.transfer-already-active'],
    })
    expect(results.map((r) => [r.id, r.status])).toEqual([
      ['source.complete.plc-operation', 'pass'],
      ['source.errors.account-deactivated', 'pass'],
      ['source.errors.transfer-already-active', 'skip'],
    ])
    const data = await new plc.Client(plcDir.url).getDocumentData(t.did)
    expect(data.services.atproto_pds?.endpoint).toBe('https://destination.example')
    expect(data.rotationKeys.at(-1)).toBe(t.complete?.newRotationKey)
  })
})

describe("the draft's source checks against our own source (draft mode)", () => {
  let plcDir: PlcDirectory
  let self: SelfSource
  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    self = await startSelfSource({ plc: plcDir })
  }, 60_000)
  afterAll(async () => {
    await self?.close()
    await plcDir?.close()
  })

  it('passes every draft check; completion skipped without --complete', async () => {
    const results = await runChecks(draftSourceChecks, self.draft)
    console.log(formatTable(buildReport({ role: 'source', url: self.draft.url }, new Date(), results)))
    expect(results.filter((r) => r.status === 'fail')).toEqual([])
    expect(results.filter((r) => r.status === 'skip').map((r) => r.id)).toEqual([
      'source.draft.transport.https',
      ...DRAFT_COMPLETION_CHECKS,
    ])
  })

  it("with completion: a request dropping the user's key refused, then the move keeps it first, submitted", async () => {
    await self.enableDraftCompletion()
    const results = await runChecks(draftSourceChecks, self.draft, { only: ['source.draft.complete'] })
    expect(results.map((r) => [r.id, r.status, r.evidence])).toEqual([
      [
        DRAFT_COMPLETION_CHECKS[0],
        'pass',
        expect.stringMatching(/HTTP 400 InvalidRequest.*account still active/),
      ],
      [DRAFT_COMPLETION_CHECKS[1], 'pass', expect.stringMatching(/submitted to PLC/)],
    ])
    const data = await new plc.Client(plcDir.url).getDocumentData(self.draft.did)
    expect(data.services.atproto_pds?.endpoint).toBe('https://destination.example')
    // The user's recovery key first (the fixture's), the source's own dropped, the new one last.
    expect(data.rotationKeys).toHaveLength(2)
    expect(data.rotationKeys.at(-1)).toBe(self.draft.complete?.newRotationKey)
    expect(await self.draft.accountActive?.()).toBe(false)
  })
})

describe('conformance suite against our own destination', () => {
  let plcDir: PlcDirectory
  let self: SelfDestination
  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    self = await startSelfDestination({ plc: plcDir })
  }, 60_000)
  afterAll(async () => {
    await self?.close()
    await plcDir?.close()
  })

  it('passes every destination check', async () => {
    const results = await runChecks(destinationChecks, self.target)
    console.log(formatTable(buildReport({ role: 'destination', url: self.target.url }, new Date(), results)))
    expect(results.filter((r) => r.status === 'fail')).toEqual([])
    // Plain HTTP on loopback: the one skip.
    expect(results.filter((r) => r.status === 'skip').map((r) => r.id)).toEqual([
      'destination.transport.https',
    ])
  }, 120_000)

  it('passes every draft destination check: hostile sync answers and completeTransfer operations refused', async () => {
    const results = await runChecks(draftDestinationChecks, self.draftTarget)
    console.log(formatTable(buildReport({ role: 'destination', url: self.target.url }, new Date(), results)))
    expect(results.map((r) => [r.id, r.status])).toEqual(draftDestinationChecks.map((c) => [c.id, 'pass']))
  }, 120_000)
})
