/**
 * The pds-transfer-conformance command line (bin: `src/cli.ts`), as a function so tests run
 * it in-process. Usage in conformance/README.md and `--help`.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import type { TransferAlgorithm, TransferPrivateJwk } from '@pds-transfer/core'
import type { SourceClient } from '@pds-transfer/destination'
import type { CheckResult, ConformanceReport, DraftSourceTarget, SourceTarget } from './suite/index.ts'

/** The heavy modules (atproto, HPKE, fastify), loaded only once the arguments are known good. */
const load = async () => ({
  ...(await import('@pds-transfer/core')),
  ...(await import('@pds-transfer/destination')),
  ...(await import('./suite/index.ts')),
  ...(await import('./harness/key-host.ts')),
  ...(await import('./harness/cli-oauth.ts')),
  ...(await import('./harness/plc-directory.ts')),
  ...(await import('./harness/destination-server.ts')),
  ...(await import('./harness/start-hook.ts')),
  ...(await import('./suite/self-destination.ts')),
  ...(await import('./suite/self-source.ts')),
})
let lib!: Awaited<ReturnType<typeof load>>

const USAGE = `usage: pds-transfer-conformance <mode> [options]

modes
  --source URL        check a sending PDS (v1: --did, --token or --handle/--password, --key;
                      --dialect draft: --handle/--password (OAuth DPoP) or --did --token)
  --destination URL   check a receiving PDS (needs --start-hook; see README "destination mode");
                      with --dialect draft, its pulls from a hostile draft source
  self                run every check in-process against pds-transfer's own source and destination
                      (v1 and draft)
  vectors             check this implementation against conformance/vectors
  capture             record one raw exportAccount response (--source, --did, --token, --key, --out)
  inspect DIR         decode a capture offline: frames, blobs, CAR root, violations
  gen-key             write a fresh HPKE recipient key (--out FILE, --alg HPKE-3|HPKE-4)
  serve-key FILE      serve FILE's public key at /.well-known/atproto-transfer (--listen host:port)
  serve-source        run our source with a test account; prints the --source arguments (--out key file)
  serve-destination   run our destination with the start hook and a PLC directory (--port, --plc-port)

source options
  --dialect v1|draft      which proposal the source serves: v1 (0014's stream, default) or draft
                          (0015's JSON exportAccount and the sync endpoints)
  --did DID               the test account (default with --handle: the signed-in account)
  --handle HANDLE         sign the test account in at the PDS's own OAuth server (a loopback
                          client with DPoP, as a destination does); env CONFORMANCE_HANDLE
  --password PASSWORD     its password, for a headless sign-in (env CONFORMANCE_PASSWORD); without
                          it the sign-in URL is printed: open it in a browser on this machine
  --callback-port N       loopback port of the OAuth redirect (default 8789; part of the client_id,
                          so keep it fixed between runs: another one is another destination)
  --token TOKEN           or: an access token with the transfer scopes, sent as Bearer
  --key FILE              v1: recipient JWK (private) published at the token's OAuth client origin (D7)
  --plc URL               PLC directory (default https://plc.directory)
  --other-token T --other-key FILE   a token of the same account for a second client (another
                          origin publishing FILE), for TransferAlreadyActive
  --other-did DID         another account the source hosts (the token must not export it)
  --signing-key DID_KEY   the DID's #atproto key (default: resolved from --plc)
  --complete              also run completeTransfer (DEACTIVATES the account at the source) with
  --plc-token T --new-pds URL --new-signing-key DID_KEY --new-rotation-key DID_KEY [--submit-plc]

destination options
  --start-hook URL        POST {did, sourceUrl, accessToken} -> {transferId}
  --complete-hook URL     POST {transferId, plcToken}: enters the PLC code (completion checks)
  --plc URL               PLC directory the destination resolves DIDs with (writable: the suite
                          registers test DIDs there); default: start one on --plc-port (2582)
  --listen HOST:PORT      where our hostile source listens (default 127.0.0.1:0)
  --public-url URL        how the destination reaches it (default http://HOST:PORT)
  --client-id ID          the destination's OAuth client_id (default URL/oauth-client-metadata.json)

output
  --json FILE             write the JSON report (- for stdout; the table then goes to stderr)
  --only ID[,ID...]       run only checks with these ids or id prefixes
  --timeout MS            per-request / per-verdict timeout (default 120000)

exit code: 1 on any MUST failure, 2 on bad usage or a crash, 0 otherwise`

class UsageError extends Error {}

/** Where the CLI writes: the terminal, or a test's buffers. */
export interface CliIo {
  out(text: string): void
  err(text: string): void
  columns?: number
}

/**
 * Runs the CLI with `argv` (without node and script) and returns the exit code: 0, 1 on a MUST
 * failure (or violations found by inspect), 2 on bad usage or a crash.
 */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  let exitCode = 0
  const { values, positionals } = parseArgs({
    args: argv.filter((a, i) => !(i === 0 && a === '--')),
    allowPositionals: true,
    options: {
      source: { type: 'string' },
      destination: { type: 'string' },
      did: { type: 'string' },
      token: { type: 'string' },
      handle: { type: 'string' },
      password: { type: 'string' },
      dialect: { type: 'string' },
      'callback-port': { type: 'string' },
      key: { type: 'string' },
      plc: { type: 'string' },
      'plc-port': { type: 'string' },
      'signing-key': { type: 'string' },
      complete: { type: 'boolean' },
      'plc-token': { type: 'string' },
      'new-pds': { type: 'string' },
      'new-signing-key': { type: 'string' },
      'new-rotation-key': { type: 'string' },
      'submit-plc': { type: 'boolean' },
      'start-hook': { type: 'string' },
      'other-token': { type: 'string' },
      'other-key': { type: 'string' },
      'other-did': { type: 'string' },
      'complete-hook': { type: 'string' },
      listen: { type: 'string' },
      'public-url': { type: 'string' },
      'client-id': { type: 'string' },
      json: { type: 'string' },
      only: { type: 'string' },
      timeout: { type: 'string' },
      out: { type: 'string' },
      port: { type: 'string' },
      alg: { type: 'string' },
      'transfer-id': { type: 'string' },
      extensions: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })

  const need = (name: keyof typeof values): string => {
    const v = values[name]
    if (typeof v !== 'string' || v === '') throw new UsageError(`--${name} is required here`)
    return v
  }
  const url = (name: keyof typeof values): string => {
    const v = need(name)
    try {
      return new URL(v).href.replace(/\/$/, '')
    } catch {
      throw new UsageError(`--${name} must be a URL, got ${JSON.stringify(v)}`)
    }
  }
  const only = values.only
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  const timeoutMs = values.timeout ? Number(values.timeout) : undefined

  async function loadKey(file: string): Promise<TransferPrivateJwk> {
    let key: TransferPrivateJwk
    try {
      key = JSON.parse(await readFile(file, 'utf8')) as TransferPrivateJwk
    } catch (err) {
      throw new UsageError(`--key ${file}: cannot read a JSON JWK (${(err as Error).message})`)
    }
    if (key.kty !== 'OKP' || key.crv !== 'X25519' || typeof key.d !== 'string') {
      throw new UsageError(
        `--key ${file}: must be a private X25519 JWK (kty OKP, crv X25519, d); make one with gen-key`,
      )
    }
    return key
  }

  function listenAddress(): { host: string; port: number } {
    const [host = '127.0.0.1', port = '0'] = (values.listen ?? '').split(':').filter(Boolean)
    const n = Number(port)
    if (!Number.isInteger(n) || n < 0 || n > 65535)
      throw new UsageError(`--listen ${values.listen}: bad port`)
    return { host, port: n }
  }

  const dialect = values.dialect ?? 'v1'
  const handle = values.handle ?? process.env.CONFORMANCE_HANDLE
  const password = values.password ?? process.env.CONFORMANCE_PASSWORD

  /**
   * The test account's client: a bearer `--token`, or a real OAuth session with DPoP at the
   * PDS's own authorization server (`--handle`, headless with `--password`, else in a browser).
   */
  async function accountClient(sourceUrl: string): Promise<{ did: string; client: SourceClient }> {
    if (values.token) return { did: need('did'), client: lib.bearerSourceClient(sourceUrl, values.token) }
    if (!handle && !values.did) throw new UsageError('give --handle (and --password) or --did and --token')
    const session = await lib.cliOAuthSession({
      identifier: values.did ?? (handle as string),
      ...(handle && { username: handle }),
      ...(password !== undefined && { password }),
      scope: dialect === 'draft' ? lib.DRAFT_OAUTH_SCOPE : lib.TRANSFER_OAUTH_SCOPE,
      ...(values.plc && { plcUrl: url('plc') }),
      ...(values['callback-port'] && { callbackPort: Number(values['callback-port']) }),
      onAuthorizeUrl: (u) =>
        io.err(`open this URL in a browser on this machine and sign in as the test account:\n  ${u.href}\n`),
    })
    if (new URL(session.aud).origin !== new URL(sourceUrl).origin) {
      throw new UsageError(`${session.did} is hosted at ${session.aud}, not at --source ${sourceUrl}`)
    }
    io.err(`signed in as ${session.did} with OAuth (DPoP); granted: ${session.grantedScope}\n`)
    return { did: session.did, client: { url: sourceUrl, fetch: session.client.fetch } }
  }

  function completion(): SourceTarget['complete'] {
    if (!values.complete) return undefined
    const token = need('plc-token')
    return {
      plcToken: async () => token,
      newPdsEndpoint: url('new-pds'),
      newSigningKey: need('new-signing-key'),
      newRotationKey: need('new-rotation-key'),
      submit: values['submit-plc'] === true,
    }
  }

  async function draftTarget(): Promise<DraftSourceTarget> {
    const sourceUrl = url('source')
    const complete = completion()
    return {
      url: sourceUrl,
      ...(await accountClient(sourceUrl)),
      ...(values.plc && { plcUrl: url('plc') }),
      ...(values['other-did'] && { otherDid: values['other-did'] }),
      ...(timeoutMs && { timeoutMs }),
      ...(complete && { complete }),
    }
  }

  async function sourceTarget(): Promise<SourceTarget> {
    const sourceUrl = url('source')
    const recipientKey = await loadKey(need('key'))
    const target: SourceTarget = {
      url: sourceUrl,
      ...(await accountClient(sourceUrl)),
      recipientKey,
      ...(values.plc && { plcUrl: url('plc') }),
      ...(values['signing-key'] && { signingKey: values['signing-key'] }),
      ...(values['other-did'] && { otherDid: values['other-did'] }),
      ...(timeoutMs && { timeoutMs }),
    }
    if (values['other-token']) {
      target.otherClient = {
        client: lib.bearerSourceClient(sourceUrl, values['other-token']),
        recipientKey: await loadKey(need('other-key')),
      }
    }
    if (values.extensions !== undefined) target.extensions = values.extensions.split(',').filter(Boolean)
    const complete = completion()
    if (complete) target.complete = complete
    return target
  }

  /** Prints the table (stderr when JSON goes to stdout), writes JSON, sets the exit code. */
  async function report(
    role: ConformanceReport['target']['role'],
    target: string,
    started: Date,
    results: CheckResult[],
  ) {
    const r = lib.buildReport({ role, url: target }, started, results)
    const table = lib.formatTable(r, { width: io.columns ?? 100 })
    if (values.json === '-') {
      io.err(`${table}\n`)
      io.out(`${JSON.stringify(r, null, 2)}\n`)
    } else {
      io.out(`${table}\n`)
      if (values.json) await writeFile(values.json, `${JSON.stringify(r, null, 2)}\n`)
    }
    exitCode = lib.exitCodeFor(r)
  }

  const progress = (r: CheckResult) =>
    io.err(`${r.status === 'pass' ? '.' : r.status === 'fail' ? 'F' : 's'}`)

  async function main(): Promise<void> {
    const mode = positionals[0]
    const started = new Date()
    if (values.help) {
      io.out(USAGE)
      return
    }
    if (timeoutMs !== undefined && !(timeoutMs > 0))
      throw new UsageError('--timeout must be a positive number of ms')
    if (values.source) url('source')
    if (values.destination) url('destination')
    if (dialect !== 'v1' && dialect !== 'draft') throw new UsageError('--dialect must be v1 or draft')
    lib = await load()
    if (values.source && !mode && dialect === 'draft') {
      const target = await draftTarget()
      const results = await lib.runChecks(lib.draftSourceChecks, target, {
        ...(only && { only }),
        onResult: progress,
      })
      io.err('\n')
      return report('source', target.url, started, results)
    }
    if (values.source && !mode) {
      const target = await sourceTarget()
      const results = await lib.runChecks(lib.sourceChecks, target, {
        ...(only && { only }),
        onResult: progress,
      })
      io.err('\n')
      return report('source', target.url, started, results)
    }
    if (values.destination && !mode) {
      const destinationUrl = url('destination')
      const hook = url('start-hook')
      const plcDir = values.plc
        ? { url: url('plc'), close: async () => {} }
        : await lib.startPlcDirectory(Number(values['plc-port'] ?? 2582))
      const listen = listenAddress()
      const clientId = values['client-id'] ?? `${destinationUrl}/oauth-client-metadata.json`
      if (dialect === 'draft') {
        const hostileDraft = await lib.startHostileDraftSource({
          plcUrl: plcDir.url,
          destinationClientId: clientId,
          host: listen.host,
          port: listen.port,
          ...(values['public-url'] && { publicUrl: url('public-url') }),
        })
        io.err(`hostile draft source at ${hostileDraft.url}, test DIDs in PLC ${plcDir.url}\n`)
        try {
          const driver = lib.httpHookDriver(
            destinationUrl,
            hook,
            values['complete-hook'] ? url('complete-hook') : undefined,
          )
          const results = await lib.runChecks(
            lib.draftDestinationChecks,
            {
              url: destinationUrl,
              hostile: hostileDraft,
              ...driver,
              ...(timeoutMs && { verdictTimeoutMs: timeoutMs }),
            },
            { ...(only && { only }), onResult: progress },
          )
          io.err('\n')
          return await report('destination', destinationUrl, started, results)
        } finally {
          await hostileDraft.close()
          await plcDir.close()
        }
      }
      const hostile = await lib.startHostileSource({
        plcUrl: plcDir.url,
        destinationClientId: clientId,
        host: listen.host,
        port: listen.port,
        ...(values['public-url'] && { publicUrl: url('public-url') }),
      })
      io.err(`hostile source at ${hostile.url}, test DIDs in PLC ${plcDir.url}\n`)
      try {
        const driver = lib.httpHookDriver(
          destinationUrl,
          hook,
          values['complete-hook'] ? url('complete-hook') : undefined,
        )
        const results = await lib.runChecks(
          lib.destinationChecks,
          { url: destinationUrl, hostile, ...driver, ...(timeoutMs && { verdictTimeoutMs: timeoutMs }) },
          { ...(only && { only }), onResult: progress },
        )
        io.err('\n')
        return await report('destination', destinationUrl, started, results)
      } finally {
        await hostile.close()
        await plcDir.close()
      }
    }
    switch (mode) {
      case 'self':
        return self(started)
      case 'vectors':
        return report('self', 'conformance/vectors', started, await lib.runVectorChecks())
      case 'capture': {
        const target = await sourceTarget()
        const out = need('out')
        const capture = await lib.recordExport({
          client: target.client,
          did: target.did,
          transferId: values['transfer-id'] ?? lib.createTransferId(),
          recipientKey: target.recipientKey,
          ...(target.extensions?.length && { extra: { extensions: target.extensions } }),
          signingKey: await lib.signingKeyOf(target),
          ...(timeoutMs && { timeoutMs }),
        })
        await lib.writeCapture(out, capture)
        io.out(
          `wrote ${out}: HTTP ${capture.response.status}, ${capture.body.length} bytes${capture.bodyComplete ? '' : ` (incomplete: ${capture.bodyError})`}`,
        )
        return
      }
      case 'inspect': {
        const dir = positionals[1]
        if (!dir) throw new UsageError('inspect needs the capture folder')
        const capture = await lib.readCapture(dir)
        const { json, text, analysis } = await lib.inspectCapture(capture, {
          ...(values['signing-key'] && { signingKey: values['signing-key'] }),
        })
        if (values.json === '-') io.out(JSON.stringify(json, null, 2))
        else io.out(text)
        exitCode = analysis.violations.length > 0 ? 1 : 0
        return
      }
      case 'gen-key': {
        const alg = (values.alg ?? 'HPKE-3') as TransferAlgorithm
        if (alg !== 'HPKE-3' && alg !== 'HPKE-4') throw new UsageError('--alg must be HPKE-3 or HPKE-4')
        const key = lib.generateTransferKey({ alg, exp: Math.floor(Date.now() / 1000) + 30 * 86400 })
        await writeFile(need('out'), `${JSON.stringify(key, null, 2)}\n`, { mode: 0o600 })
        io.out(JSON.stringify(lib.publicJwk(key)))
        return
      }
      case 'serve-key': {
        const file = positionals[1]
        if (!file) throw new UsageError('serve-key needs the key file')
        const key = await loadKey(file)
        const listen = listenAddress()
        const host = await lib.startKeyHost([lib.publicJwk(key)], 'did:web:conformance.invalid', listen)
        io.out(
          `serving ${key.kid} at ${host.origin}/.well-known/atproto-transfer; client_id origin ${host.origin}`,
        )
        await new Promise(() => {})
        return
      }
      case 'serve-source': {
        // Our own source as a black-box target, to try --source and capture against.
        const plcDir = values['plc-port']
          ? await lib.startPlcDirectory(Number(values['plc-port']))
          : await lib.startPlcDirectory()
        const self = await lib.startSelfSource({ plc: plcDir })
        const out = need('out')
        await writeFile(out, `${JSON.stringify(self.target.recipientKey, null, 2)}\n`, { mode: 0o600 })
        io.out(
          `source running; check it with:\n  --source ${self.target.url} --did ${self.target.did} --token ${self.token} --key ${out} --plc ${plcDir.url}`,
        )
        await new Promise(() => {})
        return
      }
      case 'serve-destination': {
        // Our own destination with the test hook, to try --destination against.
        const plcDir = await lib.startPlcDirectory(Number(values['plc-port'] ?? 2582))
        const dest = await lib.startDestinationServer({
          plc: plcDir,
          startHook: true,
          ...(values.port && { port: Number(values.port) }),
        })
        io.out(
          `destination running; check it with:\n  --destination ${dest.url} --start-hook ${dest.url}${lib.START_HOOK_PATH} --complete-hook ${dest.url}${lib.COMPLETE_HOOK_PATH} --plc ${plcDir.url}`,
        )
        await new Promise(() => {})
        return
      }
      default:
        throw new UsageError(mode ? `unknown mode ${mode}` : 'give --source URL, --destination URL or a mode')
    }
  }

  /**
   * Both suites and the vectors against our own implementation, in-process. The source's
   * completion checks run last, on the throwaway account the others used: completeTransfer
   * moves it, so every check that needs it active runs before.
   */
  async function self(started: Date): Promise<void> {
    const plcDir = await lib.startPlcDirectory()
    const src = await lib.startSelfSource({ plc: plcDir })
    const dst = await lib.startSelfDestination({ plc: plcDir })
    const selected = { ...(only && { only }), onResult: progress }
    const completing = (c: { id: string }) => lib.COMPLETION_CHECKS.includes(c.id)
    try {
      const results = [
        ...(await lib.runVectorChecks()).filter(
          (r) => !only || only.some((p) => r.id === p || r.id.startsWith(`${p}.`)),
        ),
        ...(await lib.runChecks(
          lib.sourceChecks.filter((c) => !completing(c)),
          src.target,
          selected,
        )),
      ]
      await src.enableCompletion()
      results.push(...(await lib.runChecks(lib.sourceChecks.filter(completing), src.target, selected)))
      // The draft's checks on a source of their own (its exports would supersede the v1 ones').
      const draftSrc = await lib.startSelfSource({ plc: plcDir })
      try {
        const draftCompleting = (c: { id: string }) => lib.DRAFT_COMPLETION_CHECKS.includes(c.id)
        results.push(
          ...(await lib.runChecks(
            lib.draftSourceChecks.filter((c) => !draftCompleting(c)),
            draftSrc.draft,
            selected,
          )),
        )
        await draftSrc.enableDraftCompletion()
        results.push(
          ...(await lib.runChecks(lib.draftSourceChecks.filter(draftCompleting), draftSrc.draft, selected)),
        )
      } finally {
        await draftSrc.close()
      }
      results.push(
        ...(await lib.runChecks(lib.destinationChecks, dst.target, selected)),
        ...(await lib.runChecks(lib.draftDestinationChecks, dst.draftTarget, selected)),
      )
      io.err('\n')
      await report('self', `${src.target.url} + ${dst.target.url}`, started, results)
    } finally {
      await dst.close()
      await src.close()
      await plcDir.close()
    }
  }

  try {
    await main()
    return exitCode
  } catch (err) {
    if (err instanceof UsageError) io.err(`${err.message}\n\n${USAGE}\n`)
    else io.err(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    return 2
  }
}
