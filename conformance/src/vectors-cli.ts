/**
 * `check`: runs this implementation against the vectors in conformance/vectors
 * and prints a report (exit 1 on any failure). `generate`: rewrites our own
 * vector files from their fixed inputs.
 */
import { checkVectors } from './vectors/check-vectors.ts'
import { writeVectorFiles } from './vectors/vector-files.ts'

const command = process.argv[2] ?? 'check'
if (command === 'generate') {
  for (const file of await writeVectorFiles()) console.log(`wrote conformance/vectors/${file}`)
} else if (command === 'check') {
  const results = await checkVectors()
  const width = Math.max(...results.map((r) => r.name.length))
  let file = ''
  for (const r of results) {
    if (r.file !== file) {
      file = r.file
      console.log(`\n${file}`)
    }
    console.log(`  ${r.pass ? 'PASS' : 'FAIL'}  ${r.name.padEnd(width)}  ${r.detail}`)
  }
  const failed = results.filter((r) => !r.pass).length
  console.log(`\n${results.length - failed}/${results.length} vector checks passed`)
  process.exitCode = failed ? 1 : 0
} else {
  console.error('usage: vectors-cli.ts check|generate')
  process.exitCode = 64
}
