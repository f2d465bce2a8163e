import type { CheckResult } from './check.ts'

/** The machine-readable report (`--json`): stable field names for CI. */
export interface ConformanceReport {
  tool: '@pds-transfer/conformance'
  version: 1
  target: { role: 'source' | 'destination' | 'self'; url: string }
  startedAt: string
  summary: { pass: number; fail: number; skip: number; mustFailures: number; shouldFailures: number }
  results: CheckResult[]
}

export function buildReport(
  target: ConformanceReport['target'],
  startedAt: Date,
  results: CheckResult[],
): ConformanceReport {
  const count = (f: (r: CheckResult) => boolean) => results.filter(f).length
  return {
    tool: '@pds-transfer/conformance',
    version: 1,
    target,
    startedAt: startedAt.toISOString(),
    summary: {
      pass: count((r) => r.status === 'pass'),
      fail: count((r) => r.status === 'fail'),
      skip: count((r) => r.status === 'skip'),
      mustFailures: count((r) => r.status === 'fail' && r.level === 'MUST'),
      shouldFailures: count((r) => r.status === 'fail' && r.level === 'SHOULD'),
    },
    results,
  }
}

/** Non-zero on any MUST failure; SHOULD failures are reported but do not fail CI. */
export function exitCodeFor(report: ConformanceReport): number {
  return report.summary.mustFailures > 0 ? 1 : 0
}

/** A readable table: status, level, section, id, then the evidence wrapped under it. */
export function formatTable(report: ConformanceReport, options: { width?: number } = {}): string {
  const width = options.width ?? 100
  const rows = report.results
  const idWidth = Math.max(2, ...rows.map((r) => r.id.length))
  const sectionWidth = Math.max(7, ...rows.map((r) => r.section.length))
  const lines = [
    `${'RESULT'.padEnd(6)}  ${'LEVEL'.padEnd(6)}  ${'SECTION'.padEnd(sectionWidth)}  ${'CHECK'.padEnd(idWidth)}  TIME`,
  ]
  for (const r of rows) {
    const mark = r.status === 'pass' ? 'PASS' : r.status === 'fail' ? 'FAIL' : 'skip'
    lines.push(
      `${mark.padEnd(6)}  ${r.level.padEnd(6)}  ${r.section.padEnd(sectionWidth)}  ${r.id.padEnd(idWidth)}  ${r.durationMs} ms`,
    )
    for (const part of wrap(`${r.title}: ${r.evidence}`, width - 8)) lines.push(`        ${part}`)
  }
  const s = report.summary
  lines.push(
    '',
    `${report.target.role} ${report.target.url}: ${s.pass} passed, ${s.fail} failed (${s.mustFailures} MUST, ${s.shouldFailures} SHOULD), ${s.skip} skipped`,
  )
  return lines.join('\n')
}

function wrap(text: string, width: number): string[] {
  const out: string[] = []
  for (const paragraph of text.split('\n')) {
    let line = ''
    for (const word of paragraph.split(' ')) {
      if (line && line.length + 1 + word.length > width) {
        out.push(line)
        line = word
      } else line = line ? `${line} ${word}` : word
    }
    out.push(line)
  }
  return out
}
