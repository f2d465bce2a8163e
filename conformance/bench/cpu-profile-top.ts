/**
 * Where a `.cpuprofile` spent its time: self time by function and by package, busiest first.
 *   bash scripts/dev tsx conformance/bench/cpu-profile-top.ts <file.cpuprofile> [rows] [from-s] [to-s]
 * `from-s`/`to-s` keep only the samples in that window, in seconds since the profile started
 * (the `pds` section starts its profiles when the timed migration starts, so a phase's window
 * can be read off its phase table).
 */
import { readFile } from 'node:fs/promises'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: number[]
}
interface Profile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
  startTime: number
  endTime: number
}

const [file, rowsArg, fromArg, toArg] = process.argv.slice(2)
if (!file) throw new Error('usage: cpu-profile-top.ts <file.cpuprofile> [rows]')
const rows = Number(rowsArg ?? 25)
const profile = JSON.parse(await readFile(file, 'utf8')) as Profile
const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const parent = new Map<number, number>()
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
/** Native code (a SQLite statement, a file system call) is charged to the script that called it. */
const caller = (id: number): ProfileNode => {
  let node = byId.get(id) as ProfileNode
  const own = node
  while (
    !node.callFrame.url &&
    parent.has(node.id) &&
    !/^\((idle|garbage collector|program)\)$/.test(own.callFrame.functionName)
  ) {
    node = byId.get(parent.get(node.id) as number) as ProfileNode
  }
  return node.callFrame.url ? node : own
}
const [from, to] = [Number(fromArg ?? 0) * 1000, Number(toArg ?? Number.POSITIVE_INFINITY) * 1000]
const selfMs = new Map<number, number>()
let elapsedMs = 0
let windowMs = 0
profile.samples.forEach((id, i) => {
  const ms = (profile.timeDeltas[i] ?? 0) / 1000
  elapsedMs += ms
  if (elapsedMs < from || elapsedMs > to) return
  windowMs += ms
  selfMs.set(id, (selfMs.get(id) ?? 0) + ms)
})

/** The package (or Node internal, or our workspace folder) a script URL belongs to. */
function packageOf(url: string): string {
  const pnpm = /node_modules\/\.pnpm\/[^/]+\/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (pnpm) return pnpm[1] as string
  const workspace = /\/(packages\/[^/]+|conformance\/[^/]+)\//.exec(url)
  if (workspace) return workspace[1] as string
  return url.startsWith('node:') ? url : url ? 'other' : '(native, GC, idle)'
}

const functions = new Map<string, number>()
const packages = new Map<string, number>()
for (const [id, ms] of selfMs) {
  const own = (byId.get(id) as ProfileNode).callFrame
  const { functionName, url, lineNumber } = caller(id).callFrame
  const where = url
    ? `${url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*?\/(packages|conformance)\//, '$1/')}:${lineNumber + 1}`
    : ''
  const native = own.url || own === caller(id).callFrame ? '' : `[${own.functionName}] `
  const name = `${native}${functionName || '(anonymous)'} ${where}`.trim()
  functions.set(name, (functions.get(name) ?? 0) + ms)
  packages.set(packageOf(url), (packages.get(packageOf(url)) ?? 0) + ms)
}
const total = windowMs
const top = (m: Map<string, number>) =>
  [...m]
    .sort((x, y) => y[1] - x[1])
    .slice(0, rows)
    .map(([name, ms]) => ({ name, ms: Math.round(ms), '%': ((100 * ms) / total).toFixed(1) }))
console.log(`${file}: ${(total / 1000).toFixed(2)} s profiled`)
console.table(top(packages))
console.table(top(functions))
