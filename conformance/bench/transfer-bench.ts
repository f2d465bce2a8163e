import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TransferAlgorithm } from '@pds-transfer/core'
import type { InboundTransfer } from '@pds-transfer/destination'
import type { AccountShape } from '../src/fixtures/build-account.ts'
import { ChildPeer } from '../src/harness/child-peer.ts'
import { freePort } from '../src/harness/destination-server.ts'

const SOURCE_SCRIPT = join(import.meta.dirname, 'source-process.ts')
const DESTINATION_SCRIPT = join(import.meta.dirname, '../src/harness/destination-process.ts')

export interface TransferResult {
  shape: string
  algorithm: TransferAlgorithm
  records: number
  blobs: number
  /** Plaintext bytes received by the destination. */
  mb: number
  seconds: number
  mbPerSecond: number
  sourcePeakRssMiB: number
  destinationPeakRssMiB: number
}

/** A built account a source process can serve: its data directory, DID and URL. */
export interface Fixture {
  name: string
  dir: string
  did: string
  port: number
  dispose(): Promise<void>
}

/** Builds an account once (in its own process: its memory does not count against the source). */
export async function buildFixture(name: string, plcUrl: string, shape: AccountShape): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), `pds-transfer-bench-${name}-`))
  const port = await freePort()
  const builder = ChildPeer.fork<{ did: string }>(SOURCE_SCRIPT, {
    MODE: 'build',
    DIR: dir,
    PLC_URL: plcUrl,
    PDS_URL: `http://127.0.0.1:${port}`,
    SHAPE: JSON.stringify(shape),
  })
  const { did } = await builder.ready
  await builder.exited
  return { name, dir, did, port, dispose: () => rm(dir, { recursive: true, force: true }) }
}

/**
 * One transfer of `fixture` between a fresh source process and a fresh destination process,
 * so each side's peak RSS is its own; timed from exportAccount to the verified import.
 */
export async function benchTransfer(
  fixture: Fixture,
  plcUrl: string,
  algorithm: TransferAlgorithm,
): Promise<TransferResult> {
  const source = ChildPeer.fork<{ url: string }>(SOURCE_SCRIPT, {
    MODE: 'serve',
    DIR: fixture.dir,
    PORT: String(fixture.port),
    DID: fixture.did,
    PLC_URL: plcUrl,
  })
  const destDir = await mkdtemp(join(tmpdir(), 'pds-transfer-bench-dest-'))
  let destination: ChildPeer<{ url: string }> | undefined
  try {
    const { url: sourceUrl } = await source.ready
    const destPort = await freePort()
    const clientId = `http://127.0.0.1:${destPort}/.well-known/oauth-client-metadata/migration`
    const token = await source.call<string>({ issue: clientId })
    destination = ChildPeer.fork(DESTINATION_SCRIPT, {
      PLC_URL: plcUrl,
      DEST_DIR: destDir,
      DEST_PORT: String(destPort),
      SOURCE_URL: sourceUrl,
      SOURCE_TOKEN: token,
      ALGORITHMS: algorithm,
    })
    await destination.ready
    const started = performance.now()
    const { transferId } = await destination.call<InboundTransfer>({ start: fixture.did })
    const done = await destination.call<InboundTransfer>({ wait: transferId })
    const seconds = (performance.now() - started) / 1000
    if (done.failure) throw new Error(`${fixture.name}: ${done.failure.reason}: ${done.failure.message}`)
    const mb = done.progress.bytesReceived / 1e6
    return {
      shape: fixture.name,
      algorithm,
      records: done.progress.records,
      blobs: done.progress.blobsReceived + done.progress.blobsReconciled,
      mb,
      seconds,
      mbPerSecond: mb / seconds,
      sourcePeakRssMiB: (await source.call<{ maxRssMiB: number }>({ rss: true })).maxRssMiB,
      destinationPeakRssMiB: (await destination.call<{ maxRssMiB: number }>({ rss: true })).maxRssMiB,
    }
  } finally {
    await destination?.kill()
    await source.kill()
    await rm(destDir, { recursive: true, force: true })
  }
}
