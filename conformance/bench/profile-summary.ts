/**
 * Summarizes a `.cpuprofile` (self time per function and per package, top N) or a
 * `.heapprofile` (live sampled bytes per allocation site): `tsx conformance/bench/profile-summary.ts
 * <file> [--top 30]`. What `profile-transfer.ts` writes, read without a browser.
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'

interface CallFrame {
  functionName: string
  url: string
  lineNumber: number
}
interface CpuNode {
  id: number
  callFrame: CallFrame
  hitCount?: number
  children?: number[]
}
interface HeapNode {
  callFrame: CallFrame
  selfSize: number
  children: HeapNode[]
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '30' } },
})
const top = Number(values.top)
const file = positionals[0]
if (!file) throw new Error('usage: profile-summary.ts <file.cpuprofile|file.heapprofile>')
const profile = JSON.parse(readFileSync(file, 'utf8'))

const where = (f: CallFrame) => `${f.functionName || '(anonymous)'} ${shortUrl(f.url)}:${f.lineNumber + 1}`
const pkg = (f: CallFrame) => {
  const m = /node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?((?:@[^/]+\/)?[^/]+)/.exec(f.url)
  if (m) return m[1] as string
  if (f.url.startsWith('node:')) return 'node'
  if (!f.url) return f.functionName.startsWith('(') ? f.functionName : '(native)'
  return /packages\/([^/]+)|conformance/.exec(f.url)?.[0] ?? 'other'
}
const add = (map: Map<string, number>, key: string, n: number) => map.set(key, (map.get(key) ?? 0) + n)
const print = (title: string, map: Map<string, number>, unit: (n: number) => string, total: number) => {
  console.log(`\n${title}`)
  for (const [k, n] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${unit(n).padStart(10)} ${((100 * n) / total).toFixed(1).padStart(5)}%  ${k}`)
  }
}

if (profile.nodes && profile.samples) {
  const nodes = profile.nodes as CpuNode[]
  const interval = (profile.endTime - profile.startTime) / profile.samples.length / 1000
  const self = new Map<string, number>()
  const byPkg = new Map<string, number>()
  let total = 0
  for (const node of nodes) {
    const ms = (node.hitCount ?? 0) * interval
    total += ms
    add(self, where(node.callFrame), ms)
    add(byPkg, pkg(node.callFrame), ms)
  }
  const ms = (n: number) => `${n.toFixed(0)} ms`
  print('self time by package', byPkg, ms, total)
  print('self time by function', self, ms, total)
} else if (profile.head) {
  const self = new Map<string, number>()
  const byPkg = new Map<string, number>()
  let total = 0
  const visit = (node: HeapNode, stack: string) => {
    const here = where(node.callFrame)
    if (node.selfSize > 0) {
      total += node.selfSize
      add(self, `${here}  <- ${stack}`, node.selfSize)
      add(byPkg, pkg(node.callFrame), node.selfSize)
    }
    for (const child of node.children) visit(child, here)
  }
  visit(profile.head as HeapNode, '')
  const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`
  print('live sampled bytes by package', byPkg, mib, total)
  print('live sampled bytes by allocation site', self, mib, total)
}

function shortUrl(url: string): string {
  return url.replace(/^file:\/\//, '').replace(/.*node_modules\/(\.pnpm\/[^/]+\/node_modules\/)?/, '')
}
