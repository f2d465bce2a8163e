/**
 * The pds-identity command line (bin: `src/cli.ts`), as a function so tests run it in-process.
 * The private key is read from the user's file and used here; it is never sent anywhere.
 */
import { parseArgs } from 'node:util'
import * as plc from '@did-plc/lib'
import { addRotationKey, requestRotationKeyCode } from './add-rotation-key.ts'
import type { CliIo } from './cli-io.ts'
import { IdentityError } from './identity-error.ts'
import { recoveryOperation } from './recovery-operation.ts'
import { planRecovery } from './recovery-plan.ts'
import { readRestoreChallenge, signRestoreChallenge } from './restore-challenge.ts'
import { generateRotationKey, readRotationKeyFile, writeRotationKeyFile } from './rotation-key-file.ts'
import { describeRotationKeys } from './rotation-keys.ts'
import { runWatch } from './watch-command.ts'

export const USAGE = `usage: pds-identity <command> [options]

commands
  keygen --out FILE [--curve p256|k256] [--account DID]
      a new rotation key pair, as a key file (keep it private: it can take your identity back)
  add-key DID --key FILE [--code CODE] [--pds URL]
      put your key first in the identity's rotation keys, through its PDS while it still works
      (the account password in PDS_IDENTITY_PASSWORD; app passwords are refused). Without --code
      the PDS emails you a code; run again with it
  keys DID [--key FILE ...]
      the identity's rotation keys by rank (yours marked), and its changes of the last 72 hours
      with how long each can still be undone
  recover DID --key FILE --pds URL --signing-key DID_KEY [--pds-rotation-key DID_KEY] [--submit]
      with your own rotation key, point the identity at a new PDS (its URL and the signing key it
      made for the account); undoes changes made without you in the last 72 hours where PLC
      allows. Prints the signed operation; --submit sends it to PLC
  watch DID... [--pds URL] [--key FILE ...] [--expect DID_KEY ...] [--webhook URL] [--state FILE]
        [--every SECONDS] [--once]
      alert on every new PLC operation of these identities (and of every account of the PDS at
      --pds URL): who signed it, whether that key is yours (--key files, --expect public keys),
      what changed, the time left in PLC's 72-hour window and the command that undoes it.
      Alerts go to stdout and, as JSON, to --webhook (signed with HMAC-SHA256 when
      PDS_IDENTITY_WEBHOOK_SECRET is set: header x-pds-identity-signature). --state keeps what was seen between runs
      (the first look at a DID records it, no alert). Checks every 60 seconds (--every), or
      once with --once: exit code 1 if an operation was not expected, 3 if a DID could not be
      checked
  prove --key FILE --challenge TEXT
      sign a restore page's challenge (base64, as /recover shows it) to prove you hold the key;
      refuses any other text

options
  --plc URL       PLC directory (default https://plc.directory)

exit code: 0 on success, 1 when PLC or the rules refuse (the reason and what is still possible
are printed), 2 on bad usage`

/** Runs the CLI with `argv` (without node and script) and returns the exit code. */
export async function runIdentityCli(
  argv: string[],
  io: CliIo,
  deps: { now?: () => Date; signal?: AbortSignal; webhookRetryDelaysMs?: number[] } = {},
): Promise<number> {
  let values: ReturnType<typeof parse>['values']
  let command: string
  let did: string | undefined
  let dids: string[]
  try {
    ;({ values, command, did, dids } = parse(argv))
  } catch (err) {
    io.err(`${(err as Error).message}\n\n${USAGE}\n`)
    return 2
  }
  if (command === 'help') {
    io.out(USAGE)
    return 0
  }
  const now = deps.now?.() ?? new Date()
  const client = new plc.Client(values.plc ?? 'https://plc.directory')
  try {
    if (command === 'keygen') {
      if (!values.out) throw new UsageError('missing --out FILE')
      const curve = values.curve === 'k256' ? 'k256' : 'p256'
      const { file } = await generateRotationKey({
        curve,
        ...(values.account && { account: values.account }),
      })
      await writeRotationKeyFile(values.out, file)
      io.out(`wrote ${values.out}; public key ${file.publicKey}`)
      io.out("keep the file private and safe; put the public key first in your identity's rotation keys")
      return 0
    }
    if (command === 'prove') {
      const keyPath = values.key?.[0]
      if (!keyPath || !values.challenge) throw new UsageError('prove needs --key FILE and --challenge TEXT')
      const text = Buffer.from(values.challenge, 'base64').toString('utf8')
      const { file, keypair } = await readRotationKeyFile(keyPath)
      const scope = readRestoreChallenge(text)
      if (scope)
        io.err(
          `signing: restore ${scope.did} on ${scope.serviceDid} from ${scope.source}, until ${scope.expires.toISOString()}\n`,
        )
      const signature = await signRestoreChallenge(keypair, text)
      io.out(`key: ${file.publicKey}`)
      io.out(`signature: ${signature}`)
      return 0
    }
    if (command === 'watch') return await watchCommand(dids, values, client, io, deps)
    if (!did) throw new UsageError('missing DID')
    const log = await client.getAuditableLog(did)
    if (command === 'keys') {
      const yours = await Promise.all(
        (values.key ?? []).map(async (k) => (await readRotationKeyFile(k)).file.publicKey),
      )
      const { keys, recent } = await describeRotationKeys(log, yours, now)
      for (const k of keys) io.out(`${k.rank}. ${k.key}${k.yours ? '  (yours)' : ''}`)
      if (!keys.some((k) => k.yours))
        io.out(yours.length ? 'none of these is yours' : 'pass --key FILE to see which of these is yours')
      for (const c of recent)
        io.out(
          `changed ${c.createdAt} by ${c.signedBy}: a key ranked above it can undo this until ${c.undoableUntil}`,
        )
      return 0
    }
    if (command === 'add-key') return await addKeyCommand(did, values, client, io)
    // recover
    const keyPath = values.key?.[0]
    if (!keyPath || !values.pds || !values['signing-key'])
      throw new UsageError('recover needs --key FILE, --pds URL and --signing-key DID_KEY')
    const { keypair } = await readRotationKeyFile(keyPath)
    const plan = await planRecovery(log, keypair.did(), now)
    const op = await recoveryOperation(plan, keypair, {
      pds: values.pds,
      signingKey: values['signing-key'],
      ...(values['pds-rotation-key'] && { pdsRotationKey: values['pds-rotation-key'] }),
    })
    io.err(
      plan.kind === 'update'
        ? `your key can change this identity: a new operation after ${plan.prev}\n`
        : `undoing ${plan.nullifies.length} change(s) made without you (the first signed by ${plan.signedBy}); PLC allows this until ${plan.deadline.toISOString()}\n`,
    )
    io.out(JSON.stringify(op, null, 2))
    if (values.submit) {
      await client.sendOperation(did, op)
      const data = await client.getDocumentData(did)
      io.err(
        `PLC accepted it: ${did} now names ${data.services.atproto_pds?.endpoint}, rotation keys ${data.rotationKeys.join(', ')}\n`,
      )
    }
    return 0
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`${err.message}\n\n${USAGE}\n`)
      return 2
    }
    if (err instanceof IdentityError) {
      io.err(`refused (${err.reason}): ${err.message}\nwhat you can do: ${err.next}\n`)
      return 1
    }
    const plcMessage = (err as { data?: { message?: unknown } }).data?.message
    io.err(
      `error: ${typeof plcMessage === 'string' ? `PLC refused: ${plcMessage}` : (err as Error).message}\n`,
    )
    return 1
  }
}

/** `add-key`: the code requested, or the key added with it. */
async function addKeyCommand(
  did: string,
  values: ReturnType<typeof parse>['values'],
  client: plc.Client,
  io: CliIo,
): Promise<number> {
  const keyPath = values.key?.[0]
  if (!keyPath) throw new UsageError('add-key needs --key FILE')
  const password = process.env.PDS_IDENTITY_PASSWORD
  if (!password) throw new UsageError('add-key needs the account password in PDS_IDENTITY_PASSWORD')
  const userKey = (await readRotationKeyFile(keyPath)).file.publicKey
  const pds = values.pds ?? (await client.getDocumentData(did)).services.atproto_pds?.endpoint
  if (!pds) throw new UsageError(`${did} names no PDS; pass --pds URL`)
  if (!values.code) {
    await requestRotationKeyCode({ pds, did, password })
    io.out(`${pds} has emailed the account a code; run again with --code CODE (it expires in minutes)`)
    return 0
  }
  const { rotationKeys, changed } = await addRotationKey({
    pds,
    did,
    password,
    userKey,
    code: values.code,
    plc: client,
  })
  io.out(changed ? `PLC now lists your key first:` : `your key is already first:`)
  for (const [i, k] of rotationKeys.entries()) io.out(`${i + 1}. ${k}${k === userKey ? '  (yours)' : ''}`)
  return 0
}

/** `watch`: the options checked and the key files read for their public keys. */
async function watchCommand(
  dids: string[],
  values: ReturnType<typeof parse>['values'],
  client: plc.Client,
  io: CliIo,
  deps: { now?: () => Date; signal?: AbortSignal; webhookRetryDelaysMs?: number[] },
): Promise<number> {
  if (dids.length === 0 && !values.pds)
    throw new UsageError('watch needs DIDs, or --pds URL for every account of a PDS')
  const every = Number(values.every ?? 60)
  if (!Number.isFinite(every) || every < 1)
    throw new UsageError('--every takes a number of seconds, at least 1')
  if (values.once && !values.state)
    throw new UsageError(
      '--once needs --state FILE: without it every run is a first look, and nothing is ever alerted',
    )
  const keys = [
    ...(await Promise.all(
      (values.key ?? []).map(async (file) => ({
        key: (await readRotationKeyFile(file)).file.publicKey,
        file,
      })),
    )),
    ...(values.expect ?? []).map((key) => {
      if (!key.startsWith('did:key:z')) throw new UsageError(`--expect ${key} is not a did:key`)
      return { key }
    }),
  ]
  // From the environment, not argv: a secret on the command line is visible to every user in ps.
  const webhookSecret = process.env.PDS_IDENTITY_WEBHOOK_SECRET
  if (webhookSecret && !values.webhook)
    throw new UsageError('PDS_IDENTITY_WEBHOOK_SECRET is set but no --webhook URL is given')
  return runWatch(
    {
      dids,
      ...(values.pds && { pds: values.pds }),
      keys,
      ...(values.webhook && { webhook: values.webhook }),
      ...(webhookSecret && { webhookSecret }),
      ...(values.state && { statePath: values.state }),
      everySeconds: every,
      once: values.once ?? false,
      ...(values.plc && { plcUrl: values.plc }),
    },
    client,
    io,
    deps,
  )
}

class UsageError extends Error {}

function parse(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      out: { type: 'string' },
      curve: { type: 'string' },
      account: { type: 'string' },
      key: { type: 'string', multiple: true },
      pds: { type: 'string' },
      code: { type: 'string' },
      'signing-key': { type: 'string' },
      'pds-rotation-key': { type: 'string' },
      challenge: { type: 'string' },
      submit: { type: 'boolean' },
      expect: { type: 'string', multiple: true },
      webhook: { type: 'string' },
      state: { type: 'string' },
      every: { type: 'string' },
      once: { type: 'boolean' },
      plc: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  const [command = 'help', ...args] = positionals
  if (values.help) return { values, command: 'help', did: undefined, dids: [] }
  if (!['keygen', 'add-key', 'keys', 'recover', 'prove', 'watch', 'help'].includes(command))
    throw new Error(`unknown command ${command}`)
  // Only watch takes several DIDs.
  if (command !== 'watch' && args.length > 1) throw new Error(`unexpected ${args.slice(1).join(' ')}`)
  for (const did of args) if (!did.startsWith('did:plc:')) throw new Error(`${did} is not a did:plc`)
  return { values, command, did: args[0], dids: args }
}
