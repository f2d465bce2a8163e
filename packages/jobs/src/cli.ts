#!/usr/bin/env node
/** pds-jobs: backups (next moves and restores) as durable jobs shared by many workers. See the package README. */
import { runJobsCli } from './jobs-cli.ts'

const code = await runJobsCli(process.argv.slice(2), {
  out: (text) => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(text),
})
process.exit(code)
