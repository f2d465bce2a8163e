import { decode as cborDecode } from '@atproto/lex-cbor'
import { def, readCarWithRoot, verifyCommitSig, verifyRepoCar } from '@atproto/repo'
import * as plc from '@did-plc/lib'
import { pdsMailerSink } from '@pds-transfer/atproto-pds'
import type { IdentityAlert } from '@pds-transfer/identity'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { type FirehoseEvent, follow, waitFor } from '../src/harness/firehose.ts'
import { headlessAuthorize } from '../src/harness/headless-oauth.ts'
import { listAllRecords } from '../src/harness/list-records.ts'
import { postForm } from '../src/harness/migrate-forms.ts'
import { type ReferencePdsPair, startReferencePdsPair } from '../src/harness/reference-pds.ts'
import {
  buildReport,
  destinationChecks,
  engineDriver,
  formatTable,
  type HostileSource,
  runChecks,
  type SourceTarget,
  sourceChecks,
  startHostileSource,
} from '../src/suite/index.ts'

/**
 * The whole 0014 flow between two reference PDSes (@atproto/pds with our adapters in front):
 * the user starts at the destination's /migrate, signs in at the source's own OAuth page, the
 * destination pulls the account, the user enters the emailed PLC token, and the account lives
 * on at the destination: served normally there, deactivated at the source, moved in PLC.
 */
type Did = `did:${string}:${string}`

describe('two reference PDSes', () => {
  let pair: ReferencePdsPair
  let alice: SeededAccount
  /** Each PDS's firehose, read through its public URL from before the move on. */
  const firehose = { a: [] as FirehoseEvent[], b: [] as FirehoseEvent[] }
  const unsubscribe = new AbortController()
  const collections = ['app.bsky.feed.post', 'app.bsky.graph.follow']
  const before = new Map<string, unknown[]>()

  const listRecords = listAllRecords
  const form = postForm

  beforeAll(async () => {
    pair = await startReferencePdsPair({ limits: { retry: { attempts: 3, baseDelayMs: 20 } } })
    alice = await seedReferenceAccount(pair.a.url, {
      handle: 'alice.test',
      email: 'alice@example.com',
      password: 'alice-password-1',
      posts: 250,
      images: 6,
      follows: 20,
    })
    for (const c of collections) before.set(c, await listRecords(pair.a.url, alice.did, c))
    // An app password at A: a credential, which must not move (D24).
    const made = await fetch(`${pair.a.url}/xrpc/com.atproto.server.createAppPassword`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${alice.accessJwt}` },
      body: JSON.stringify({ name: 'phone' }),
    })
    expect(made.status).toBe(200)
    for (const side of ['a', 'b'] as const) void follow(pair[side].url, firehose[side], unsubscribe.signal)
  }, 120_000)
  afterAll(async () => {
    unsubscribe.abort()
    await pair?.close()
  })

  it('moves the account through /migrate, OAuth at the source and the PLC token', async () => {
    const { a, b } = pair
    const authorize = await form(`${b.url}/migrate/authorize`, { did: alice.did })
    expect(authorize.status).toBe(303)
    const authorizeUrl = new URL(authorize.headers.get('location') as string)
    expect(authorizeUrl.origin).toBe(a.url) // the source's own authorization server

    const callback = await headlessAuthorize(authorizeUrl, {
      username: alice.handle,
      password: alice.password,
    })
    const started = await fetch(callback, { redirect: 'manual' })
    expect(started.status).toBe(303)
    const transferId = new URL(started.headers.get('location') as string).pathname.split('/').at(-1) as string

    let transfer = await b.engine.get(transferId)
    for (let i = 0; i < 400 && transfer?.stage !== 'awaitingPlcToken' && transfer?.status !== 'failed'; i++) {
      await new Promise((r) => setTimeout(r, 50))
      transfer = await b.engine.get(transferId)
    }
    expect(transfer?.failure).toBeUndefined()
    expect(transfer?.stage).toBe('awaitingPlcToken')
    expect(transfer?.progress.blobsReceived).toBe(alice.blobs.size)

    // Until the token is entered, nothing has moved.
    expect((await fetch(`${a.url}/xrpc/com.atproto.sync.getLatestCommit?did=${alice.did}`)).status).toBe(200)

    const token = pair.plcTokens.get(alice.did)?.at(-1) as string
    expect(token).toMatch(/^[A-Z2-7]{5}-[A-Z2-7]{5}$/)
    const done = await form(`${b.url}/migrate/transfer/${transferId}/complete`, { token })
    expect(done.status, JSON.stringify(await b.engine.get(transferId))).toBeLessThan(400)
    transfer = await b.engine.get(transferId)
    expect(transfer?.status).toBe('completed')
  }, 120_000)

  it('serves every record and blob byte-identical at the destination', async () => {
    for (const c of collections) {
      expect(await listRecords(pair.b.url, alice.did, c)).toEqual(before.get(c))
    }
    for (const [cid, bytes] of alice.blobs) {
      const res = await fetch(`${pair.b.url}/xrpc/com.atproto.sync.getBlob?did=${alice.did}&cid=${cid}`)
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toBe('image/png')
      // fixturePng returns a Buffer; compare as plain bytes.
      expect(new Uint8Array(await res.arrayBuffer())).toEqual(new Uint8Array(bytes))
    }
    const repo = await fetch(`${pair.b.url}/xrpc/com.atproto.sync.getRepo?did=${alice.did}`)
    expect(repo.status).toBe(200)
  })

  it('indexed the repo as the source PDS had (records, backlinks, blob links and types)', async () => {
    const rows = (side: 'a' | 'b') =>
      pair[side].pds.ctx.actorStore.read(alice.did as `did:plc:${string}`, async (store) => {
        const db = store.repo.db.db
        return {
          records: await db
            .selectFrom('record')
            .select(['uri', 'cid', 'collection', 'rkey'])
            .orderBy('uri')
            .execute(),
          backlinks: await db.selectFrom('backlink').selectAll().orderBy('uri').execute(),
          recordBlobs: await db.selectFrom('record_blob').selectAll().orderBy('recordUri').execute(),
          blobs: await db.selectFrom('blob').select(['cid', 'mimeType', 'size']).orderBy('cid').execute(),
        }
      })
    const [a, b] = [await rows('a'), await rows('b')]
    expect(b.backlinks.length).toBe(20) // the follows
    expect(b).toEqual(a)
  })

  it('moved the identity and deactivated the source', async () => {
    const data = (await (await fetch(`${pair.plc.url}/${alice.did}/data`)).json()) as {
      services: { atproto_pds: { endpoint: string } }
      verificationMethods: { atproto: string }
      rotationKeys: string[]
    }
    expect(data.services.atproto_pds.endpoint).toBe(pair.b.url)
    expect(data.verificationMethods.atproto).toBe((await pair.b.pds.ctx.actorStore.keypair(alice.did)).did())
    expect(data.rotationKeys).toContain(pair.b.pds.ctx.plcRotationKey.did())
    expect(data.rotationKeys).not.toContain(pair.a.pds.ctx.plcRotationKey.did())

    const res = await fetch(`${pair.a.url}/xrpc/com.atproto.sync.getRepo?did=${alice.did}`)
    expect(res.status).toBe(400)
    expect(((await res.json()) as { error: string }).error).toBe('RepoDeactivated')
    // Credentials stayed behind (D24): the app password made at A is not at B.
    const appPasswords = (side: 'a' | 'b') =>
      pair[side].pds.ctx.accountManager.db.db
        .selectFrom('app_password')
        .select('name')
        .where('did', '=', alice.did)
        .execute()
    expect(await appPasswords('a')).toEqual([{ name: 'phone' }])
    expect(await appPasswords('b')).toEqual([])
  })

  it('erratum E6: the password does not move; the user resets it by the imported email, signs in and writes', async () => {
    const { b } = pair
    const resetToken = await b.pds.ctx.accountManager.createEmailToken(
      alice.did as `did:plc:${string}`,
      'reset_password',
    )
    const reset = await fetch(`${b.url}/xrpc/com.atproto.server.resetPassword`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: resetToken, password: 'alice-password-2' }),
    })
    expect(reset.status).toBe(200)
    const session = (await (
      await fetch(`${b.url}/xrpc/com.atproto.server.createSession`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ identifier: alice.did, password: 'alice-password-2' }),
      })
    ).json()) as { accessJwt: string; email?: string; active?: boolean }
    expect(session.email).toBe('alice@example.com')
    expect(session.active).toBe(true)
    const auth = { authorization: `Bearer ${session.accessJwt}` }

    const prefs = await fetch(`${b.url}/xrpc/app.bsky.actor.getPreferences`, { headers: auth })
    expect(((await prefs.json()) as { preferences: unknown[] }).preferences).toEqual(alice.preferences)

    const write = await fetch(`${b.url}/xrpc/com.atproto.repo.createRecord`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({
        repo: alice.did,
        collection: 'app.bsky.feed.post',
        record: {
          $type: 'app.bsky.feed.post',
          text: 'hello from my new PDS',
          createdAt: new Date().toISOString(),
        },
      }),
    })
    expect(write.status).toBe(200)
    const posts = await listRecords(b.url, alice.did, 'app.bsky.feed.post')
    expect(posts.length).toBe((before.get('app.bsky.feed.post')?.length ?? 0) + 1)
  })

  it("relays can follow the move: A's and B's public firehoses, signatures checked against PLC", async () => {
    const did = alice.did
    const { a, b } = firehose
    const key = (
      (await (await fetch(`${pair.plc.url}/${did}/data`)).json()) as {
        verificationMethods: { atproto: string }
      }
    ).verificationMethods.atproto
    const events = (list: FirehoseEvent[], type: string) =>
      // #commit names the account `repo`, the other events `did`.
      list.filter((e) => e.$type === `com.atproto.sync.subscribeRepos#${type}` && (e.did ?? e.repo) === did)
    await waitFor(() => events(b, 'commit').length > 0)

    expect(events(a, 'account').at(-1)).toMatchObject({ active: false, status: 'deactivated' })
    expect(events(b, 'identity')).not.toHaveLength(0)
    expect(events(b, 'account').at(-1)).toMatchObject({ active: true })
    // The #sync of the activation carries a head signed with the key PLC now names.
    const sync = events(b, 'sync').at(-1) as FirehoseEvent & { blocks: Uint8Array; rev: string }
    const { root, blocks } = await readCarWithRoot(sync.blocks)
    const head = def.commit.schema.parse(cborDecode(blocks.get(root) as Uint8Array))
    expect(await verifyCommitSig(head, key)).toBe(true)
    expect(head.rev).toBe(sync.rev)
    // The post written at B chains onto it.
    const commit = events(b, 'commit').at(-1) as FirehoseEvent & { since: string; prevData: unknown }
    expect(commit.since).toBe(sync.rev)
    expect(String(commit.prevData)).toBe(head.data.toString())
    // And B's whole repo verifies with the DID's current key.
    const car = await fetch(`${pair.b.url}/xrpc/com.atproto.sync.getRepo?did=${did}`)
    await expect(verifyRepoCar(new Uint8Array(await car.arrayBuffer()), did, key)).resolves.toBeDefined()
  })

  /**
   * The conformance suite against the same two adapters (the code `pds-transfer-conformance`
   * runs against any PDS): A as a source, reached with a real OAuth session (PAR, DPoP) that B
   * signed in for; B as a destination, pulling from our hostile source.
   */
  describe('conformance suite', () => {
    let hostile: HostileSource
    beforeAll(async () => {
      hostile = await startHostileSource({
        plcUrl: pair.plc.url,
        destinationClientId: `${pair.b.url}/.well-known/oauth-client-metadata/migration`,
      })
    })
    afterAll(() => hostile?.close())

    it('A passes the source checks (OAuth DPoP session of B, the key B publishes)', async () => {
      const alice = await seedReferenceAccount(pair.a.url, {
        handle: 'conf-alice.test',
        email: 'conf-alice@example.com',
        password: 'conf-alice-password',
        posts: 20,
        images: 3,
        follows: 3,
      })
      const authorizeUrl = await pair.b.authorizer.authorize({ did: alice.did, sourceUrl: pair.a.url })
      const callback = await headlessAuthorize(authorizeUrl, {
        username: alice.handle,
        password: alice.password,
      })
      const { client } = await pair.b.authorizer.callback(callback.searchParams)
      const recipientKey = await pair.b.keys.current('HPKE-3')
      if (!recipientKey) throw new Error('B publishes no HPKE-3 key')
      const target: SourceTarget = {
        url: pair.a.url,
        did: alice.did,
        client,
        recipientKey,
        plcUrl: pair.plc.url,
        plcTokenSent: async () => (pair.plcTokens.get(alice.did)?.length ?? 0) > 0,
        accountActive: async () =>
          (await pair.a.pds.ctx.accountManager.getAccount(alice.did as Did, { includeDeactivated: true }))
            ?.deactivatedAt == null,
      }
      const results = await runChecks(sourceChecks, target)
      console.log(formatTable(buildReport({ role: 'source', url: target.url }, new Date(), results)))
      expect(results.filter((r) => r.status === 'fail')).toEqual([])
      expect(results.filter((r) => r.status === 'skip').map((r) => r.id)).toEqual([
        'source.transport.https',
        'source.complete.plc-operation',
        'source.errors.account-deactivated',
        'source.errors.transfer-already-active',
      ])
    }, 60_000)

    it('B passes the destination checks', async () => {
      const { b } = pair
      const hasRepo = async (did: string) => {
        if (!(await b.pds.ctx.actorStore.exists(did))) return false
        return (await b.pds.ctx.actorStore.read(did as Did, (store) => store.record.recordCount())) > 0
      }
      const target = {
        url: b.url,
        hostile,
        verdictTimeoutMs: 30_000,
        ...engineDriver(b.engine, b.sink, hasRepo),
      }
      const results = await runChecks(destinationChecks, target)
      console.log(formatTable(buildReport({ role: 'destination', url: b.url }, new Date(), results)))
      expect(results.filter((r) => r.status === 'fail')).toEqual([])
      expect(results.filter((r) => r.status === 'skip').map((r) => r.id)).toEqual([
        'destination.transport.https',
      ])
    }, 60_000)
  })
  it("tells the account's email address through B's own mailer when PLC moves it away (the rollback watch)", async () => {
    const { b } = pair
    // B's rotation key, stolen: the identity is pointed elsewhere behind B's back.
    await new plc.Client(pair.plc.url).updatePds(
      alice.did,
      b.pds.ctx.plcRotationKey,
      'https://elsewhere.example.com',
    )
    const finding = (await b.engine.checkRollbacks()).find((f) => f.alert.did === alice.did)
    const message = finding?.transfer.rollback?.message as string
    expect(message).toContain(`pointed it at https://elsewhere.example.com (was ${b.url})`)
    const transporter = b.pds.ctx.mailer.transporter as unknown as {
      sendMail(mail: Record<string, unknown>): Promise<unknown>
    }
    const sent: Record<string, unknown>[] = []
    const send = transporter.sendMail.bind(transporter)
    transporter.sendMail = (mail) => {
      sent.push(mail)
      return send(mail)
    }
    await pdsMailerSink(b.pds.ctx, { lead: () => message }).send(finding?.alert as IdentityAlert)
    expect(sent).toHaveLength(1)
    expect(sent[0]).toMatchObject({
      to: 'alice@example.com',
      subject: 'Your identity @alice.test was changed without you',
    })
    expect(sent[0]?.text).toContain(`${message}\n\n${alice.did}: new PLC operation`)
    expect(sent[0]?.text).toContain(`signed by ${b.pds.ctx.plcRotationKey.did()}`)
    // An identity B holds no address for is a failure the watcher reports, not a silent drop.
    const stranger = { ...(finding?.alert as IdentityAlert), did: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa' }
    await expect(pdsMailerSink(b.pds.ctx).send(stranger)).rejects.toThrow(
      'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa has no email address here to alert',
    )
    expect(sent).toHaveLength(1)
  })
})
