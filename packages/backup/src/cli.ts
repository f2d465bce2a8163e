#!/usr/bin/env node
/** pds-backup: encrypted, verified backups of atproto accounts. See the package README. */
import { runBackupCli } from './backup-cli.ts'

const code = await runBackupCli(process.argv.slice(2), {
  out: (text) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`),
  err: (text) => process.stderr.write(text),
  tty: process.stderr.isTTY,
})
process.exit(code)
