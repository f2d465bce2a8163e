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
    expect(results.filter((r) => r.status !== 'pass')).toEqual([])
  }, 120_000)
})
