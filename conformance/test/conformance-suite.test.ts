import * as plc from '@did-plc/lib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { buildReport, destinationChecks, formatTable, runChecks, sourceChecks } from '../src/suite/index.ts'
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
})
