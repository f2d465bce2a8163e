import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Keypair, Secp256k1Keypair } from '@atproto/crypto'
import * as plc from '@did-plc/lib'
import { checkRollbacks, type InboundTransfer, type InboundTransferStore } from '@pds-transfer/destination'
import {
  readRotationKeyFile,
  runIdentityCli,
  verifyWebhookSignature,
  WEBHOOK_SIGNATURE_HEADER,
  type WebhookBody,
} from '@pds-transfer/identity'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'

/**
 * Issue 21, the watcher, against a real PLC directory (`@did-plc/server`): `pds-identity watch`
 * alerts on a hostile operation with who signed it, that the key is not the user's, the deadline
 * and a recovery command that works when run; reports the user's own operation as expected; does
 * not alert twice across restarts (the state file); posts the alert as JSON to a webhook, and
 * keeps going when the webhook fails; watches every account of a PDS (listRepos, paged).
 */
describe('the PLC watcher', () => {
  let plcDir: PlcDirectory
  let client: plc.Client
  let work: string
  let userKeyPath: string
  let user: Keypair
  let hooks: Server
  let hookUrl: string
  const received: WebhookBody[] = []
  const signed: { header: string | undefined; body: string }[] = []
  let failing = 0

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    client = new plc.Client(plcDir.url)
    work = await mkdtemp(join(tmpdir(), 'identity-watch-'))
    userKeyPath = join(work, 'user-key.json')
    expect((await cli('keygen', '--out', userKeyPath)).code).toBe(0)
    user = (await readRotationKeyFile(userKeyPath)).keypair
    // One local server: a webhook at /hook, a failing one at /broken, and a PDS's listRepos.
    hooks = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        if (req.url === '/hook') {
          received.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as WebhookBody)
          res.writeHead(204).end()
        } else if (req.url === '/signed') {
          const header = req.headers[WEBHOOK_SIGNATURE_HEADER]
          signed.push({
            header: Array.isArray(header) ? header[0] : header,
            body: Buffer.concat(chunks).toString(),
          })
          res.writeHead(204).end()
        } else if (req.url === '/broken') {
          failing++
          res.writeHead(503).end()
        } else if (req.url?.startsWith('/xrpc/com.atproto.sync.listRepos')) {
          const cursor = new URL(req.url, 'http://x').searchParams.get('cursor')
          const page = cursor ? pdsAccounts.slice(1) : pdsAccounts.slice(0, 1)
          res.writeHead(200, { 'content-type': 'application/json' })
          res.end(
            JSON.stringify({
              repos: page.map((did) => ({ did, head: 'x', rev: 'y' })),
              ...(!cursor && { cursor: 'page2' }),
            }),
          )
        } else res.writeHead(404).end()
      })
    })
    await new Promise<void>((r) => hooks.listen(0, '127.0.0.1', r))
    hookUrl = `http://127.0.0.1:${(hooks.address() as AddressInfo).port}`
  })
  afterAll(async () => {
    await plcDir?.close()
    await new Promise((r) => hooks?.close(r))
    if (work) await rm(work, { recursive: true, force: true })
  })
  let pdsAccounts: string[] = []

  async function cli(...argv: string[]) {
    return cliWith({}, ...argv)
  }
  async function cliWith(deps: Parameters<typeof runIdentityCli>[2], ...argv: string[]) {
    const out: string[] = []
    const err: string[] = []
    const code = await runIdentityCli(
      [...argv, ...(argv.includes('--plc') ? [] : ['--plc', plcDir?.url ?? ''])],
      { out: (t) => out.push(t), err: (t) => err.push(t) },
      deps,
    )
    return { code, out: out.join('\n'), err: err.join('') }
  }

  /** An identity on "the old server" (key `pds`) with `rotationKeys`. */
  async function identity(rotationKeys: (pds: Keypair) => string[]) {
    const pds = await Secp256k1Keypair.create()
    const did = await client.createDid({
      signingKey: (await Secp256k1Keypair.create()).did(),
      handle: `watched${Math.random().toString(36).slice(2, 8)}.test`,
      pds: 'https://old-pds.example.com',
      rotationKeys: rotationKeys(pds),
      signer: pds,
    })
    return { did, pds }
  }

  /** The old server turns hostile: the identity to an attacker's PDS, the user's key gone. */
  async function hijack(did: string, pds: Keypair) {
    const attacker = await Secp256k1Keypair.create()
    await client.updateData(did, pds, (op) => ({
      ...op,
      rotationKeys: [pds.did(), attacker.did()],
      verificationMethods: { atproto: attacker.did() },
      services: {
        atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: 'https://attacker.example.com' },
      },
    }))
  }

  it('alerts on a hostile operation with its signer, the deadline and a command that undoes it', async () => {
    const { did, pds } = await identity((pds) => [user.did(), pds.did()])
    const state = join(work, 'state.json')
    const watch = () =>
      cli('watch', did, '--key', userKeyPath, '--state', state, '--webhook', `${hookUrl}/hook`, '--once')

    const first = await watch()
    expect(first.code, first.err).toBe(0)
    expect(first.out).toBe(`watching ${did}: 2 rotation key(s), yours at rank 1`)
    expect(received).toEqual([])

    await hijack(did, pds)
    const alerted = await watch()
    expect(alerted.code, alerted.err).toBe(1)
    expect(alerted.out).toMatch(new RegExp(`^${did}: new PLC operation \\S+ at \\S+: NOT EXPECTED`))
    expect(alerted.out).toContain(`signed by ${pds.did()} (rank 2 before it), not yours`)
    expect(alerted.out).toContain(
      'pointed it at https://attacker.example.com (was https://old-pds.example.com)',
    )
    expect(alerted.out).toContain(`removed rotation key ${user.did()} (was ranked 1)`)
    const log = await client.getAuditableLog(did)
    const hostile = log[1] as plc.ExportedOp
    const deadline = new Date(new Date(hostile.createdAt).getTime() + 72 * 3_600_000).toISOString()
    expect(alerted.out).toMatch(new RegExp(`undo window: until ${deadline} \\((71h 5\\d|72h 00)m left\\)`))

    // The webhook got the same alert as JSON.
    expect(received).toHaveLength(1)
    expect(received[0]).toMatchObject({
      type: 'pds-identity.alert',
      version: 1,
      text: alerted.out,
      alert: {
        did,
        cid: hostile.cid,
        createdAt: hostile.createdAt,
        signedBy: pds.did(),
        signerRank: 2,
        signedByExpectedKey: false,
        expected: false,
        nullifies: [],
        nullified: false,
        deadline,
        recovery: { possible: true, key: user.did(), kind: 'fork' },
      },
    })

    // The command, as printed, with its placeholders filled, takes the identity back.
    const command = /^ {4}(pds-identity recover .*)$/m.exec(alerted.out)?.[1] as string
    expect(command).toBe(
      `pds-identity recover ${did} --key ${userKeyPath} --pds <new-pds-url> --signing-key <signing-key-from-new-pds> --plc ${plcDir.url} --submit`,
    )
    const newSigning = await Secp256k1Keypair.create()
    const filled = command
      .replace('<new-pds-url>', 'https://new-pds.example.com')
      .replace('<signing-key-from-new-pds>', newSigning.did())
    const recovered = await cli(...filled.split(' ').slice(1))
    expect(recovered.code, recovered.err).toBe(0)
    const doc = await client.getDocumentData(did)
    expect(doc.services.atproto_pds?.endpoint).toBe('https://new-pds.example.com')
    expect(doc.verificationMethods.atproto).toBe(newSigning.did())
    expect((await client.getAuditableLog(did)).map((e) => e.nullified)).toEqual([false, true, false])

    // The user's own operation is reported, as expected, and so is what it undid.
    const own = await watch()
    expect(own.code, own.err).toBe(0)
    expect(own.out).toMatch(/: expected\n/)
    expect(own.out).toContain(`signed by ${user.did()} (rank 1 before it), one of your keys`)
    expect(own.out).toContain(`undid 1 earlier operation(s) (a fork): ${hostile.cid}`)
    expect(own.out).not.toContain('pds-identity recover')
    expect(received.at(-1)?.alert).toMatchObject({ expected: true, recovery: null, nullifies: [hostile.cid] })

    // A restarted watcher with the same state file says nothing more.
    const again = await watch()
    expect(again).toEqual({ code: 0, out: '', err: '' })
    expect(received).toHaveLength(2)
    expect(JSON.parse(await readFile(state, 'utf8')).dids[did].cid).toBe(
      (await client.getAuditableLog(did)).at(-1)?.cid,
    )
  })

  it('says why a change cannot be undone: a key ranked above the user, or after 72 hours', async () => {
    const watch = (did: string, state: string, deps: Parameters<typeof runIdentityCli>[2] = {}) =>
      cliWith(deps, 'watch', did, '--expect', user.did(), '--state', join(work, state), '--once')
    const weak = await identity((pds) => [pds.did(), user.did()])
    expect((await watch(weak.did, 'weak.json')).out).toBe(
      `watching ${weak.did}: 2 rotation key(s), yours at rank 2`,
    )
    await hijack(weak.did, weak.pds)
    const tooWeak = await watch(weak.did, 'weak.json')
    expect(tooWeak.code).toBe(1)
    expect(tooWeak.out).toContain(`signed by ${weak.pds.did()} (rank 1 before it), not yours`)
    expect(tooWeak.out).toContain(`cannot be undone with ${user.did()} (KeyTooWeak)`)
    expect(tooWeak.out).toContain('what you can do: ')

    const other = await identity((pds) => [user.did(), pds.did()])
    await watch(other.did, 'now.json')
    await watch(other.did, 'late.json')
    await hijack(other.did, other.pds)
    // Only the public key given (--expect): the command asks for the key file.
    const now = await watch(other.did, 'now.json')
    expect(now.out).toContain(`--key <your-key-file>`)
    expect(now.out).toContain(`replace <your-key-file> with the key file of ${user.did()}`)
    const late = new Date(Date.now() + 73 * 3_600_000)
    const closed = await watch(other.did, 'late.json', { now: () => late })
    expect(closed.code).toBe(1)
    expect(closed.out).toContain('the window has closed')
    expect(closed.out).toContain(`cannot be undone with ${user.did()} (WindowClosed)`)
  })

  it('keeps watching when the webhook fails, and exits by what it found', async () => {
    const { did, pds } = await identity((pds) => [user.did(), pds.did()])
    const state = join(work, 'broken.json')
    const args = [
      'watch',
      did,
      '--expect',
      user.did(),
      '--state',
      state,
      '--webhook',
      `${hookUrl}/broken`,
      '--once',
    ]
    expect((await cli(...args)).code).toBe(0)
    await hijack(did, pds)
    const result = await cliWith({ webhookRetryDelaysMs: [10, 10] }, ...args)
    expect(result.code).toBe(1)
    expect(result.out).toContain('NOT EXPECTED')
    expect(result.err).toMatch(/alert for did:plc:\S+ not sent by webhook .*answered 503 after 3 attempts/)
    expect(failing).toBe(3)

    expect((await cli('watch', did, '--once')).code).toBe(2) // --once without --state
    const missing = await cli('watch', 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', '--state', state, '--once')
    expect(missing.code).toBe(3)
    expect(missing.err).toMatch(/could not check did:plc:a+: .*trying again next round/)
  })

  it('signs the webhook with PDS_IDENTITY_WEBHOOK_SECRET so the receiver can refuse forgeries and replays', async () => {
    const { did, pds } = await identity((pds) => [user.did(), pds.did()])
    const state = join(work, 'signed.json')
    const args = [
      'watch',
      did,
      '--expect',
      user.did(),
      '--state',
      state,
      '--webhook',
      `${hookUrl}/signed`,
      '--once',
    ]
    const secret = 'a shared secret of the operator'
    expect((await cli(...args)).code).toBe(0)
    await hijack(did, pds)
    process.env.PDS_IDENTITY_WEBHOOK_SECRET = secret
    try {
      expect((await cli(...args)).code).toBe(1)
      // A secret without a webhook is a mistake worth saying.
      const noHook = await cli('watch', did, '--state', state, '--once')
      expect(noHook.code).toBe(2)
      expect(noHook.err).toContain('PDS_IDENTITY_WEBHOOK_SECRET is set but no --webhook URL is given')
    } finally {
      delete process.env.PDS_IDENTITY_WEBHOOK_SECRET
    }
    expect(signed).toHaveLength(1)
    const [{ header, body }] = signed as [{ header: string; body: string }]
    expect(header).toMatch(/^t=\d+,sha256=[0-9a-f]{64}$/)
    expect(JSON.parse(body)).toMatchObject({ type: 'pds-identity.alert', alert: { did, expected: false } })
    expect(verifyWebhookSignature(secret, header, body)).toBeNull()
    expect(verifyWebhookSignature('another secret', header, body)).toBe('mismatch')
    expect(verifyWebhookSignature(secret, header, body.replace('NOT EXPECTED', 'expected'))).toBe('mismatch')
    expect(verifyWebhookSignature(secret, undefined, body)).toBe('missing')
    expect(verifyWebhookSignature(secret, 'sha256=00', body)).toBe('malformed')
    const later = new Date(Date.now() + 10 * 60_000)
    expect(verifyWebhookSignature(secret, header, body, { now: later })).toBe('stale')
  })

  it('watches every account of a PDS, page by page, and in a loop until stopped', async () => {
    const a = await identity((pds) => [user.did(), pds.did()])
    const b = await identity((pds) => [pds.did()])
    pdsAccounts = [a.did, b.did, 'did:web:elsewhere.example.com']
    const state = join(work, 'pds.json')
    const first = await cli('watch', '--pds', hookUrl, '--expect', user.did(), '--state', state, '--once')
    expect(first.code, first.err).toBe(0)
    expect(first.out.split('\n')).toEqual(
      expect.arrayContaining([
        `watching ${a.did}: 2 rotation key(s), yours at rank 1`,
        `watching ${b.did}: 1 rotation key(s), none of them yours`,
      ]),
    )
    expect(first.err).toContain('1 account(s) of')

    const stop = new AbortController()
    const out: string[] = []
    const loop = runIdentityCli(
      [
        'watch',
        '--pds',
        hookUrl,
        '--expect',
        user.did(),
        '--state',
        state,
        '--every',
        '1',
        '--plc',
        plcDir.url,
      ],
      { out: (t) => out.push(t), err: () => {} },
      { signal: stop.signal },
    )
    await hijack(b.did, b.pds)
    for (let i = 0; i < 100 && !out.some((t) => t.includes('NOT EXPECTED')); i++)
      await new Promise((r) => setTimeout(r, 50))
    stop.abort()
    expect(await loop).toBe(0)
    expect(out.join('\n')).toMatch(new RegExp(`^${b.did}: new PLC operation .*NOT EXPECTED`, 'm'))
    expect(out.join('\n')).toContain(`signed by ${b.pds.did()} (rank 1 before it), not yours`)
    // The user's key was never one of b's: nothing to undo it with, said with the reason.
    expect(out.join('\n')).toContain('(NoUserKey)')
  })

  it("is the destination's rollback watch: the first unexpected change since the move, even one made between rounds", async () => {
    const server = await Secp256k1Keypair.create()
    const accountKey = await Secp256k1Keypair.create()
    const { did, pds: oldPds } = await identity((pds) => [user.did(), pds.did()])
    // The move here, submitted by the old server with the user's key first and ours added.
    await client.updateData(did, oldPds, (op) => ({
      ...op,
      rotationKeys: [user.did(), server.did()],
      verificationMethods: { atproto: accountKey.did() },
      services: { atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: 'https://us.example.com/' } },
    }))
    const moved = (await client.getAuditableLog(did)).at(-1) as plc.ExportedOp
    // Our own later changes (a handle, a key added) are expected; the key added moves the
    // account away, then ours changes the handle again: all before the watch looks.
    const stranger = await Secp256k1Keypair.create()
    await client.updateHandle(did, server, 'renamed.test')
    await client.updateRotationKeys(did, server, [stranger.did(), user.did(), server.did()])
    await client.updatePds(did, stranger, 'https://thief.example.com')
    const stolen = (await client.getAuditableLog(did)).at(-1) as plc.ExportedOp
    await client.updateHandle(did, server, 'again.test')

    const transfer = {
      transferId: 't1',
      did,
      signingKey: accountKey.did(),
      plcOperation: moved.operation as unknown as Record<string, unknown>,
    } as InboundTransfer
    const updates: Partial<InboundTransfer>[] = []
    const store = {
      listWatched: async () => [
        transfer,
        { ...transfer, transferId: 't2', did: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa' },
      ],
      update: async (_id: string, changes: Partial<InboundTransfer>) => {
        updates.push(changes)
        return { ...transfer, ...changes }
      },
    } as unknown as InboundTransferStore
    const failures: string[] = []
    const found = await checkRollbacks(
      { store, plc: client, serviceUrl: 'https://us.example.com', rotationKey: server.did() },
      Date.now(),
      (f) => failures.push(f.did),
    )
    expect(failures).toEqual(['did:plc:aaaaaaaaaaaaaaaaaaaaaaaa'])
    expect(found).toHaveLength(1)
    expect(found[0]?.alert).toMatchObject({
      cid: stolen.cid,
      signedBy: stranger.did(),
      signedByExpectedKey: false,
    })
    const rollback = updates[0]?.rollback
    expect(rollback?.operationCid).toBe(stolen.cid)
    expect(rollback?.message).toContain(
      `signed by ${stranger.did()} changed this account's identity: pointed it at https://thief.example.com (was https://us.example.com/)`,
    )
    expect(rollback?.message).toContain(`Your rotation key ${user.did()} can undo it until`)
    expect(rollback?.message).toContain('use it at https://us.example.com/recover')
  })
})
