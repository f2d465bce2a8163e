#!/usr/bin/env node
/**
 * pds-transfer-conformance: checks a PDS against atproto proposal 0014 (PDS-to-PDS account
 * transfer) as pds-transfer implements it. See conformance/README.md.
 */
import { runCli } from './cli-main.ts'

const code = await runCli(process.argv.slice(2), {
  out: (text) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`),
  err: (text) => process.stderr.write(text),
  columns: process.stdout.columns,
})
process.exit(code)
