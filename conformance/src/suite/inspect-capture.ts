import { analyzeExport, type ExportAnalysis } from './analyze-export.ts'
import type { ExportCapture } from './export-capture.ts'

/** A readable account of a capture: exchange, frames, payload summary and every violation. */
export function formatAnalysis(capture: ExportCapture, a: ExportAnalysis): string {
  const lines = [
    `capture of ${capture.sourceUrl} at ${capture.capturedAt}`,
    `did ${capture.did}, transferId ${capture.transferId}, algorithm ${String(capture.request.algorithm)}`,
    `HTTP ${capture.response.status}, ${capture.body.length} body bytes${capture.bodyComplete ? '' : ` (incomplete: ${capture.bodyError})`}, extensions ${a.extensions.join(', ') || 'none'}`,
    '',
    `${'#'.padStart(4)}  ${'number'.padStart(6)}  ${'offset'.padStart(10)}  ${'bytes'.padStart(10)}  auth  content type`,
  ]
  for (const f of a.frames) {
    lines.push(
      `${String(f.index).padStart(4)}  ${String(f.frameNumber).padStart(6)}  ${String(f.offset).padStart(10)}  ${String(f.ciphertextLength - 16).padStart(10)}  ${f.auth === 'ok' ? 'ok  ' : 'FAIL'}  ${f.contentType}`,
    )
  }
  lines.push('')
  if (a.car) {
    lines.push(
      `repo: root ${a.car.root}, rev ${a.car.rev ?? '?'}, ${a.car.records ?? '?'} records, signature ${a.car.verified}${a.car.detail ? ` (${a.car.detail})` : ''}`,
    )
  }
  lines.push(
    `blobs: ${a.blobs.size} distinct in ${a.blobEntries} entries, ${[...a.blobs.values()].reduce((s, n) => s + n, 0)} bytes; ${a.referencedBlobs.length} referenced by records, ${a.missingBlobs.length} missing`,
  )
  if (a.preferences) lines.push(`preferences: ${a.preferences.length} items`)
  if (a.accountState)
    lines.push(
      `private state: ${a.accountState.fields.join(', ')}${a.accountState.ignoredFields.length ? ` (unknown: ${a.accountState.ignoredFields.join(', ')})` : ''}`,
    )
  if (a.manifest)
    lines.push(
      `end manifest: ${a.manifest.frames} frames, ${a.manifest.bytes} bytes, ${a.manifest.blobs} blobs, rev ${a.manifest.repoRev}, ${a.manifest.deferredBlobs.length} deferred`,
    )
  lines.push('')
  if (a.violations.length === 0) lines.push('no violations')
  for (const v of a.violations)
    lines.push(`VIOLATION ${v.code}${v.frame !== undefined ? ` (frame ${v.frame})` : ''}: ${v.message}`)
  return lines.join('\n')
}

/** Decodes a capture and returns its analysis as JSON-friendly data (`inspect --json`). */
export async function inspectCapture(capture: ExportCapture, options: { signingKey?: string } = {}) {
  const analysis = await analyzeExport(capture, options)
  return {
    analysis,
    json: {
      did: capture.did,
      transferId: capture.transferId,
      status: capture.response.status,
      extensions: analysis.extensions,
      frames: analysis.frames.map(({ plaintext: _p, ...f }) => f),
      car: analysis.car,
      blobs: {
        distinct: analysis.blobs.size,
        entries: analysis.blobEntries,
        referenced: analysis.referencedBlobs.length,
        missing: analysis.missingBlobs,
      },
      preferences: analysis.preferences?.length,
      accountState: analysis.accountState,
      manifest: analysis.manifest,
      violations: analysis.violations,
    },
    text: formatAnalysis(capture, analysis),
  }
}
