import { type Check, type CheckResult, CheckSkipped } from './check.ts'

export interface RunChecksOptions {
  /** Only checks whose id starts with one of these prefixes (default: all). */
  only?: readonly string[]
  /** Called after each check (the CLI prints progress). */
  onResult?: (result: CheckResult) => void
}

/**
 * Runs checks one after another (several share state on the target, such as one recorded
 * export, and a remote PDS should not see a burst). A check that throws anything other than
 * `CheckSkipped` fails with the error as evidence: a crash is never a pass.
 */
export async function runChecks<T>(
  checks: readonly Check<T>[],
  target: T,
  options: RunChecksOptions = {},
): Promise<CheckResult[]> {
  const selected = options.only?.length
    ? checks.filter((c) => options.only?.some((p) => c.id === p || c.id.startsWith(`${p}.`)))
    : checks
  const results: CheckResult[] = []
  for (const check of selected) {
    const started = performance.now()
    let status: CheckResult['status'] = 'pass'
    let evidence: string
    try {
      evidence = await check.run(target)
    } catch (err) {
      status = err instanceof CheckSkipped ? 'skip' : 'fail'
      evidence = err instanceof Error ? err.message : String(err)
    }
    const result: CheckResult = {
      id: check.id,
      section: check.section,
      level: check.level,
      title: check.title,
      status,
      evidence,
      durationMs: Math.round(performance.now() - started),
    }
    results.push(result)
    options.onResult?.(result)
  }
  return results
}
