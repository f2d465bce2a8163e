#!/usr/bin/env node
/** pds-identity: rotation keys and recovery of did:plc identities. See the package README. */
import { runIdentityCli } from './identity-cli.ts'

const code = await runIdentityCli(process.argv.slice(2), {
  out: (text) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`),
  err: (text) => process.stderr.write(text),
})
process.exit(code)
