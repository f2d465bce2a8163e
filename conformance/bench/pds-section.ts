import {
  benchPdsMigration,
  type MigrationFlow,
  type PdsAccountShape,
  type PdsMigrationResult,
} from './pds-bench.ts'

/** The `pds` section's figures: every run, and the median run of each flow. */
export interface PdsSection {
  account: PdsAccountShape
  runs: PdsMigrationResult[]
  /** The run with the median time, per flow. */
  median: Record<MigrationFlow, PdsMigrationResult>
  /** Median client-orchestrated time over median 0014 time. */
  speedup: number
  /** Median client-orchestrated time over median plain-PDS pull time (issue 19's target: 4). */
  plainSpeedup: number
  /** Median plain-PDS pull time over median 0014 time (issue 19's target: at most 1.5). */
  plainOverV1: number
  /** Median client-orchestrated time over median draft pull time (judged as the plain pull: 4). */
  draftSpeedup: number
  /** Median draft pull time over median 0014 time (judged as the plain pull: at most 1.5). */
  draftOverV1: number
}

const FLOWS: MigrationFlow[] = ['client-orchestrated', '0014 transfer', 'draft pull', 'plain-PDS pull']

/**
 * Issue 8's and issue 19's comparison on reference PDSes: the same account moved `repeat` times
 * by each flow (client-orchestrated, 0014, the draft pull, the plain-PDS pull),
 * the flows alternating so that a busy spell of the (shared) machine does not fall on one
 * flow only. Prints each run, the median run's phases, and returns the figures.
 */
export async function runPdsSection(options: {
  plcUrl: string
  account: PdsAccountShape
  repeat: number
  cpuProfDir?: string
}): Promise<PdsSection> {
  const runs: PdsMigrationResult[] = []
  for (let run = 1; run <= options.repeat; run++) {
    for (const flow of FLOWS) {
      const result = await benchPdsMigration(flow, options.plcUrl, options.account, {
        ...(options.cpuProfDir && { cpuProfDir: options.cpuProfDir, profileLabel: `run${run}` }),
      })
      console.log(`${flow} run ${run}: ${result.seconds.toFixed(2)} s; ${result.checks.join('; ')}`)
      runs.push(result)
    }
  }
  const median = Object.fromEntries(
    FLOWS.map((flow) => {
      const sorted = runs.filter((r) => r.flow === flow).sort((x, y) => x.seconds - y.seconds)
      return [flow, sorted[Math.floor((sorted.length - 1) / 2)] as PdsMigrationResult]
    }),
  ) as Record<MigrationFlow, PdsMigrationResult>
  const speedup = median['client-orchestrated'].seconds / median['0014 transfer'].seconds

  console.table(
    runs.map((r) => ({
      flow: r.flow,
      records: r.records,
      blobs: r.blobs,
      'blob MB': r.blobMB.toFixed(1),
      s: r.seconds.toFixed(2),
      'source RSS MiB': Math.round(r.sourcePeakRssMiB),
      'dest RSS MiB': Math.round(r.destinationPeakRssMiB),
    })),
  )
  for (const flow of FLOWS) {
    const r = median[flow]
    console.log(`${flow}, median run (${r.seconds.toFixed(2)} s):`)
    console.table(
      [...r.phases, ...(r.pull ?? []).map((p) => ({ ...p, name: `  pull: ${p.name}` }))].map((p) => ({
        phase: p.name,
        s: p.seconds.toFixed(2),
      })),
    )
  }
  const plainSpeedup = median['client-orchestrated'].seconds / median['plain-PDS pull'].seconds
  const plainOverV1 = median['plain-PDS pull'].seconds / median['0014 transfer'].seconds
  const draftSpeedup = median['client-orchestrated'].seconds / median['draft pull'].seconds
  const draftOverV1 = median['draft pull'].seconds / median['0014 transfer'].seconds
  console.table(
    (['0014 transfer', 'draft pull', 'plain-PDS pull'] as const).map((flow) => ({
      flow,
      'median s': median[flow].seconds.toFixed(2),
      'client-orchestrated / flow': `x${(median['client-orchestrated'].seconds / median[flow].seconds).toFixed(2)}`,
      'flow / 0014': `x${(median[flow].seconds / median['0014 transfer'].seconds).toFixed(2)}`,
    })),
  )
  return {
    account: options.account,
    runs,
    median,
    speedup,
    plainSpeedup,
    plainOverV1,
    draftSpeedup,
    draftOverV1,
  }
}
