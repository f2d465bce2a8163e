/**
 * Issue 4's account sizes: a 200k-record repo, and 2 GiB of blobs (as 2048 × 1 MiB and as
 * 32 × 64 MiB; 512 MiB blobs would exceed the destination's default 100 MiB blob limit). Each
 * transfer runs between a fresh source process and a fresh destination process, as in
 * `transfer-bench.ts`. Run alone with `tsx conformance/bench/large-accounts.ts [--quick]
 * [--only records|'1 MiB'|'64 MiB'] [--alg HPKE-3]`, or from `run.ts` through
 * `benchLargeAccounts`. Needs about 4.5 GiB of free disk in the temp dir for the blob shapes.
 */
import { parseArgs } from 'node:util'
import type { TransferAlgorithm } from '@pds-transfer/core'
import type { AccountShape } from '../src/fixtures/build-account.ts'
import { startPlcDirectory } from '../src/harness/plc-directory.ts'
import { benchTransfer, buildFixture, type TransferResult } from './transfer-bench.ts'

const MiB = 1024 * 1024

/** Issue 4's shapes by name (`--quick`: the same shapes at 1/64 of the size, a smoke test). */
export function largeShapes(quick: boolean): Record<string, AccountShape> {
  const n = (full: number) => (quick ? Math.max(1, full / 64) : full)
  return {
    '200k records': { posts: n(200_000) },
    '2 GiB as 2048 × 1 MiB': { posts: n(2048), blobSizes: Array(n(2048)).fill(MiB) },
    '2 GiB as 32 × 64 MiB': { posts: n(32), blobSizes: Array(n(32)).fill(64 * MiB) },
  }
}

/** Runs each shape once (fixture built in its own process, then one timed transfer). */
export async function benchLargeAccounts(
  plcUrl: string,
  options: { quick?: boolean; only?: string; algorithm?: TransferAlgorithm } = {},
): Promise<TransferResult[]> {
  const results: TransferResult[] = []
  for (const [name, shape] of Object.entries(largeShapes(options.quick ?? false))) {
    if (options.only && !name.includes(options.only)) continue
    const fixture = await buildFixture(`large-${results.length}`, plcUrl, shape)
    try {
      results.push(await benchTransfer({ ...fixture, name }, plcUrl, options.algorithm ?? 'HPKE-3'))
    } finally {
      await fixture.dispose()
    }
  }
  return results
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: { quick: { type: 'boolean' }, only: { type: 'string' }, alg: { type: 'string' } },
  })
  const plc = await startPlcDirectory()
  try {
    const results = await benchLargeAccounts(plc.url, {
      quick: values.quick ?? false,
      ...(values.only && { only: values.only }),
      ...(values.alg && { algorithm: values.alg as TransferAlgorithm }),
    })
    console.table(
      results.map((r) => ({
        shape: r.shape,
        suite: r.algorithm,
        MB: r.mb.toFixed(1),
        s: r.seconds.toFixed(2),
        'MB/s': r.mbPerSecond.toFixed(1),
        'source RSS MiB': Math.round(r.sourcePeakRssMiB),
        'dest RSS MiB': Math.round(r.destinationPeakRssMiB),
      })),
    )
    console.log(JSON.stringify(results))
  } finally {
    await plc.close()
  }
}
