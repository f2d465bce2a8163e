import { checkVectors } from '../vectors/check-vectors.ts'
import { FILES } from '../vectors/vector-files.ts'
import type { CheckResult } from './check.ts'

const SECTION: Record<string, string> = {
  [FILES.rfc9180]: '§2.4 (RFC 9180)',
  [FILES.transfer]: '§2.4, §2.5',
  [FILES.negative]: '§2.5, Addendum',
}

/**
 * The byte-exact vectors (conformance/vectors, documented for other languages in its README)
 * as suite results: each vector is a MUST check of this implementation's core.
 */
export async function runVectorChecks(): Promise<CheckResult[]> {
  const started = performance.now()
  const results = await checkVectors()
  const each = Math.round((performance.now() - started) / Math.max(1, results.length))
  return results.map((r) => ({
    id: `vectors.${r.file.replace(/\.json$/, '')}.${slug(r.name)}`,
    section: SECTION[r.file] ?? r.file,
    level: 'MUST',
    title: `vector ${r.name} of conformance/vectors/${r.file}`,
    status: r.pass ? 'pass' : 'fail',
    evidence: r.detail,
    durationMs: each,
  }))
}

/** `frame: ciphertext-bit-flip` -> `frame-ciphertext-bit-flip` (ids are filterable slugs). */
function slug(name: string): string {
  return name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '')
}
