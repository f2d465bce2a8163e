import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Secp256k1Keypair } from '@atproto/crypto'
import * as plcLib from '@did-plc/lib'
import { startTransferPds, type TransferPds } from '@pds-transfer/atproto-pds'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type CliIo, runCli } from '../src/cli-main.ts'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { freePort } from '../src/harness/destination-server.ts'
import { headlessAuthorize } from '../src/harness/headless-oauth.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import type { ConformanceReport } from '../src/suite/index.ts'

const NO_APPVIEW = { bskyAppViewUrl: 'http://127.0.0.1:9', bskyAppViewDid: 'did:web:appview.invalid' }

/** Runs the CLI in-process; `onErr` sees stderr as it is written (the interactive sign-in URL). */
async function cli(args: string[], onErr?: (text: string) => void) {
  let stdout = ''
  let stderr = ''
  const io: CliIo = {
    out: (t) => {
      stdout += t.endsWith('\n') ? t : `${t}\n`
    },
    err: (t) => {
      stderr += t
      onErr?.(t)
    },
  }
  const code = await runCli(args, io)
  return { code, stdout, stderr, report: code === 2 ? undefined : (JSON.parse(stdout) as ConformanceReport) }
}

/**
 * The CLI checks a real PDS without test-only auth: the reference PDS (@atproto/pds with our
 * source serving only the draft) is signed in to at its own OAuth provider with DPoP, headless
 * with a password or through the printed URL, and the draft's checks run over that session.
 */
describe('pds-transfer-conformance --dialect draft with a real OAuth DPoP session', () => {
  let plc: PlcDirectory
  let pds: TransferPds
  let dir: string
  let alice: SeededAccount
  let bob: SeededAccount
  let carol: SeededAccount

  beforeAll(async () => {
    plc = await startPlcDirectory()
    dir = await mkdtemp(join(tmpdir(), 'pds-transfer-cli-oauth-'))
    pds = await startTransferPds({
      dataDir: dir,
      port: await freePort(),
      plcUrl: plc.namedUrl,
      env: NO_APPVIEW,
      sourceDialects: ['draft'],
    })
    const seed = (name: string) =>
      seedReferenceAccount(pds.url, {
        handle: `${name}.test`,
        email: `${name}@example.com`,
        password: `${name}-password-1`,
        posts: 3,
        images: 1,
        follows: 1,
      })
    alice = await seed('clialice')
    bob = await seed('clibob')
    carol = await seed('clicarol')
  }, 180_000)
  afterAll(async () => {
    await pds?.close()
    await plc?.close()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  const base = () => ['--source', pds.url, '--dialect', 'draft', '--plc', plc.url, '--json', '-']

  it('headless (--handle, --password): every draft check passes against the reference PDS', async () => {
    const run = await cli([
      ...base(),
      '--handle',
      alice.handle,
      '--password',
      alice.password,
      '--did',
      alice.did,
      '--other-did',
      bob.did,
    ])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stderr).toMatch(new RegExp(`signed in as ${alice.did} with OAuth \\(DPoP\\)`))
    expect(run.report?.summary).toMatchObject({ fail: 0 })
    expect(run.report?.results.filter((r) => r.status === 'pass').map((r) => r.id)).toEqual([
      'source.draft.export.answer',
      'source.draft.export.no-credentials',
      'source.draft.capabilities.intersection',
      'source.draft.auth.probe',
      'source.draft.auth.other-account',
      'source.draft.resume.requires-resumable',
    ])
    expect(run.report?.results.find((r) => r.id === 'source.draft.auth.other-account')?.evidence).toMatch(
      /403 TransferNotAuthorized/,
    )
  })

  it('interactive (no password): the sign-in URL is printed and the loopback redirect awaited', async () => {
    let signIn: Promise<void> | undefined
    // Another account: a loopback client on another port is another destination (client_id), which
    // the source refuses TransferAlreadyActive while the headless run's transfer is in flight.
    const run = await cli(
      [
        ...base(),
        '--handle',
        carol.handle,
        '--did',
        carol.did,
        '--callback-port',
        '0',
        '--only',
        'source.draft.export',
      ],
      (text) => {
        const url = /open this URL in a browser[^\n]*\n\s+(\S+)/.exec(text)?.[1]
        // What the user does in the browser: sign in, consent, follow the redirect to the CLI.
        if (url)
          signIn = headlessAuthorize(new URL(url), { username: carol.handle, password: carol.password }).then(
            async (callback) => {
              await (await fetch(callback)).body?.cancel()
            },
          )
      },
    )
    await signIn
    expect(run.code, run.stderr).toBe(0)
    expect(run.report?.results.map((r) => [r.id, r.status])).toEqual([
      ['source.draft.export.answer', 'pass'],
      ['source.draft.export.no-credentials', 'pass'],
    ])
  })

  it('--complete over the OAuth session: a valid move from the reference PDS, checked and submitted', async () => {
    // The draft's destination asks for the code (requestPlcOperationSignature); here the user does.
    const asked = await fetch(`${pds.url}/xrpc/com.atproto.identity.requestPlcOperationSignature`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bob.accessJwt}` },
    })
    expect(asked.status).toBe(200)
    const code = (
      await pds.pds.ctx.accountManager.db.db
        .selectFrom('email_token')
        .select('token')
        .where('did', '=', bob.did as never)
        .where('purpose', '=', 'plc_operation')
        .executeTakeFirst()
    )?.token as string
    const newRotationKey = (await Secp256k1Keypair.create()).did()
    const run = await cli([
      ...base(),
      '--handle',
      bob.handle,
      '--password',
      bob.password,
      '--did',
      bob.did,
      '--only',
      'source.draft.complete',
      '--complete',
      '--plc-token',
      code,
      '--new-pds',
      'https://destination.example',
      '--new-signing-key',
      (await Secp256k1Keypair.create()).did(),
      '--new-rotation-key',
      newRotationKey,
      '--submit-plc',
    ])
    expect(run.code, run.stderr).toBe(0)
    expect(run.report?.results.map((r) => [r.id, r.status])).toEqual([
      // The account's DID holds only the PDS's own rotation key: nothing of the user's to drop.
      ['source.draft.complete.refuses-dropping-user-key', 'skip'],
      ['source.draft.complete.plc-operation', 'pass'],
    ])
    const doc = await new plcLib.Client(plc.url).getDocumentData(bob.did)
    expect(doc.services.atproto_pds?.endpoint).toBe('https://destination.example')
    expect(doc.rotationKeys).toEqual([newRotationKey])
  })
})
