/** How strongly the protocol asks for what a check tests (RFC 2119 words of 0014 or of our spec). */
export type Level = 'MUST' | 'SHOULD'

/** Outcome of one check: `skip` when the target cannot be tested for it (said why in the evidence). */
export type CheckStatus = 'pass' | 'fail' | 'skip'

/**
 * One named, reusable conformance check. The same object runs against a remote PDS (CLI) and
 * against our own implementation in-process (tests): only the target differs.
 */
export interface Check<T> {
  /** Stable id, e.g. `source.export.frame-numbers`; CI filters and the broken-variant test name it. */
  id: string
  /** Where the rule is written: 0014 section (`§2.5`, `Addendum`) or our spec (`D7`, `extensions.md`). */
  section: string
  level: Level
  /** One line: what must hold. */
  title: string
  /** Returns evidence on success; throws `CheckFailed` (or anything) on failure, `CheckSkipped` to skip. */
  run(target: T): Promise<string>
}

/** The result of running one check, as reported in JSON and in the terminal table. */
export interface CheckResult {
  id: string
  section: string
  level: Level
  title: string
  status: CheckStatus
  /** What was observed: the facts a reviewer needs to believe the verdict. */
  evidence: string
  durationMs: number
}

/** A check's rule does not hold; `message` is the evidence. */
export class CheckFailed extends Error {
  override readonly name = 'CheckFailed'
}

/** The check cannot run against this target (an optional feature, missing credentials, ...). */
export class CheckSkipped extends Error {
  override readonly name = 'CheckSkipped'
}

/** Throws `CheckFailed(evidence)` unless `condition` holds. */
export function expectThat(condition: unknown, evidence: string): asserts condition {
  if (!condition) throw new CheckFailed(evidence)
}

/** Throws `CheckSkipped(reason)`. */
export function skip(reason: string): never {
  throw new CheckSkipped(reason)
}

/** §1.5: the well-known document is served `public` with a max-age of at most an hour. */
export function cacheControlEvidence(res: Response): string {
  const cc = res.headers.get('cache-control') ?? ''
  const maxAge = Number(/max-age=(\d+)/.exec(cc)?.[1] ?? Number.NaN)
  expectThat(/\bpublic\b/.test(cc) && maxAge > 0 && maxAge <= 3600, `Cache-Control: ${JSON.stringify(cc)}`)
  return `Cache-Control: ${cc}`
}

/**
 * §2.7: transfer traffic is HTTPS. A plain-http URL passes only on loopback (a test setup),
 * where the check is skipped with that evidence.
 */
export function httpsEvidence(url: string): string {
  const u = new URL(url)
  if (u.protocol === 'https:') return `${u.origin} is HTTPS (TLS version not observable from here)`
  if (['localhost', '127.0.0.1', '[::1]'].includes(u.hostname))
    skip(`${u.origin} is plain HTTP on loopback (a test setup)`)
  throw new CheckFailed(`${u.origin} is not HTTPS`)
}
