/**
 * One benchmark transfer with V8 profiling on both sides, to find where time and memory go:
 * `tsx conformance/bench/profile-transfer.ts --posts 100000 [--blobs 200 --blob-kib 1024]
 * [--alg HPKE-3] [--cpu] [--heap] [--out .bench/profiles]`. `--cpu` writes a `.cpuprofile`
 * per side (`--cpu-prof`), `--heap` a sampling `.heapprofile` (`--heap-prof`); open them in
 * Chrome DevTools or summarize with `profile-summary.ts`. It also samples each side's RSS
 * every 100 ms (`rss-trace.json`), so a peak can be placed in the transfer's phases, and reports
 * the CPU seconds each side spent on the transfer.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import type { TransferAlgorithm } from '@pds-transfer/core'
import type { InboundTransfer } from '@pds-transfer/destination'
import { ChildPeer } from '../src/harness/child-peer.ts'
import { freePort } from '../src/harness/destination-server.ts'
import { startPlcDirectory } from '../src/harness/plc-directory.ts'
import { buildFixture } from './transfer-bench.ts'

const { values } = parseArgs({
  options: {
    posts: { type: 'string', default: '20000' },
    blobs: { type: 'string', default: '0' },
    'blob-kib': { type: 'string', default: '1024' },
    alg: { type: 'string', default: 'HPKE-3' },
    cpu: { type: 'boolean' },
    heap: { type: 'boolean' },
    out: { type: 'string', default: '.bench/profiles' },
  },
})
const out = resolve(values.out)
await mkdir(out, { recursive: true })
// SIGTERM ends a side with process.exit, so V8 writes its profiles (SIGKILL would lose them).
const exitOnTerm = 'data:text/javascript,process.on("SIGTERM",()=>process.exit(0))'
const execArgv = (side: string) => [
  '--import',
  'tsx',
  '--import',
  exitOnTerm,
  ...(values.cpu ? ['--cpu-prof', `--cpu-prof-dir=${out}`, `--cpu-prof-name=${side}.cpuprofile`] : []),
  ...(values.heap ? ['--heap-prof', `--heap-prof-dir=${out}`, `--heap-prof-name=${side}.heapprofile`] : []),
]
const spawn = <R>(script: string, side: string, env: Record<string, string>) =>
  new ChildPeer<R>(
    fork(script, { env: { ...process.env, ...env }, execArgv: execArgv(side), stdio: 'inherit' }),
  )
const stop = async (peer: ChildPeer) => {
  peer.child.kill('SIGTERM')
  await peer.exited
}

const plc = await startPlcDirectory()
const blobs = Number(values.blobs)
const fixture = await buildFixture('profile', plc.url, {
  posts: Math.max(Number(values.posts), blobs),
  blobSizes: Array(blobs).fill(Number(values['blob-kib']) * 1024),
})
const destDir = await mkdtemp(join(tmpdir(), 'pds-transfer-profile-dest-'))
const source = spawn<{ url: string }>(join(import.meta.dirname, 'source-process.ts'), 'source', {
  MODE: 'serve',
  DIR: fixture.dir,
  PORT: String(fixture.port),
  DID: fixture.did,
  PLC_URL: plc.url,
})
let destination: ChildPeer<{ url: string }> | undefined
const trace: Array<{ t: number; source: number; destination: number }> = []
try {
  const { url: sourceUrl } = await source.ready
  const destPort = await freePort()
  const clientId = `http://127.0.0.1:${destPort}/.well-known/oauth-client-metadata/migration`
  const token = await source.call<string>({ issue: clientId })
  destination = spawn(join(import.meta.dirname, '../src/harness/destination-process.ts'), 'destination', {
    PLC_URL: plc.url,
    DEST_DIR: destDir,
    DEST_PORT: String(destPort),
    SOURCE_URL: sourceUrl,
    SOURCE_TOKEN: token,
    ALGORITHMS: values.alg as TransferAlgorithm,
  })
  await destination.ready
  const cpuBefore = { source: cpuSeconds(source.child), destination: cpuSeconds(destination.child) }
  const started = performance.now()
  const sampler = setInterval(() => {
    const t = Math.round(performance.now() - started)
    trace.push({ t, source: rssMiB(source.child), destination: rssMiB((destination as ChildPeer).child) })
  }, 100)
  const { transferId } = await destination.call<InboundTransfer>({ start: fixture.did })
  const done = await destination.call<InboundTransfer>({ wait: transferId })
  clearInterval(sampler)
  const seconds = (performance.now() - started) / 1000
  const cpu = {
    source: cpuSeconds(source.child) - cpuBefore.source,
    destination: cpuSeconds(destination.child) - cpuBefore.destination,
  }
  const peaks = {
    source: (await source.call<{ maxRssMiB: number }>({ rss: true })).maxRssMiB,
    destination: (await destination.call<{ maxRssMiB: number }>({ rss: true })).maxRssMiB,
  }
  await writeFile(join(out, 'rss-trace.json'), JSON.stringify(trace))
  console.log(
    JSON.stringify({
      seconds,
      mb: done.progress.bytesReceived / 1e6,
      failure: done.failure,
      peaks,
      cpu,
      profiles: out,
    }),
  )
} finally {
  if (destination) await stop(destination)
  await stop(source)
  await rm(destDir, { recursive: true, force: true })
  await fixture.dispose()
  await plc.close()
}

/**
 * CPU seconds (user + system) a child has used so far, from /proc (Linux): unlike wall time,
 * hardly changed by other work on a shared machine, so A/B comparisons hold.
 */
function cpuSeconds(child: ChildProcess): number {
  const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
  // utime and stime are fields 14 and 15 of stat, in clock ticks (100 per second on Linux).
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/** Current RSS of a child, from /proc (Linux), in MiB. */
function rssMiB(child: ChildProcess): number {
  try {
    const status = readFileSync(`/proc/${child.pid}/status`, 'utf8')
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024
  } catch {
    return 0
  }
}
