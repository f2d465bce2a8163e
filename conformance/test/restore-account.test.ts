import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AtpAgent } from '@atproto/api'
import { P256Keypair } from '@atproto/crypto'
import { verifyRepoCar } from '@atproto/repo'
import * as plcLib from '@did-plc/lib'
import { AccountArchive, FsArchiveStore, generateArchiveKeys } from '@pds-transfer/archive'
import type { TransferPds } from '@pds-transfer/atproto-pds'
import { appPasswordClient, backupAccount, backupReadApi } from '@pds-transfer/backup'
import {
  type InboundTransfer,
  PlcDidResolver,
  restoreSourceClient,
  SqliteInboundTransferStore,
  TransferEngine,
} from '@pds-transfer/destination'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { type FirehoseEvent, follow, waitFor } from '../src/harness/firehose.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { startReferencePds } from '../src/harness/reference-pds.ts'

const OPERATOR_TOKEN = 'backup-operator-secret'

/**
 * Issue 21, restore after a PDS crash, with real parts: the account lives on a plain reference
 * PDS A, with the user's own rotation key first (PLC), and is backed up by our backup tool. A is
 * then killed and its data deleted. The account is restored onto C (the reference PDS with our
 * destination) from the backup's read API; the user signs the PLC operation C prepares with
 * their key (as the browser would: over the bytes C hands out), and C submits it and activates.
 * Every record and blob is as it was, PLC names C, and C's firehose tells relays.
 */
describe('restore onto a new PDS after the old one died', () => {
  let plc: PlcDirectory
  let a: Awaited<ReturnType<typeof startPlainPds>> | undefined
  let c: TransferPds
  let work: string
  let readApi: FastifyInstance
  let readUrl: string
  const firehose: FirehoseEvent[] = []
  const unsubscribe = new AbortController()

  beforeAll(async () => {
    plc = await startPlcDirectory()
    work = await mkdtemp(join(tmpdir(), 'restore-test-'))
    a = await startPlainPds(plc.namedUrl, { dataDir: join(work, 'pds-a') })
    c = await startReferencePds(plc)
    void follow(c.url, firehose, unsubscribe.signal)
  }, 180_000)
  afterAll(async () => {
    unsubscribe.abort()
    await readApi?.close()
    await c?.close()
    await a?.close()
    await plc?.close()
    if (work) await rm(work, { recursive: true, force: true })
  })

  /** The account's records (collection/rkey → CID) in a repo CAR, verified with `key`. */
  async function recordsIn(url: string, did: string, key: string): Promise<Map<string, string>> {
    const res = await fetch(`${url}/xrpc/com.atproto.sync.getRepo?did=${did}`)
    const repo = await verifyRepoCar(new Uint8Array(await res.arrayBuffer()), did, key)
    return new Map(repo.creates.map((r) => [`${r.collection}/${r.rkey}`, r.cid.toString()]))
  }
  async function blobsAt(url: string, did: string, cids: string[]): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>()
    for (const cid of cids) {
      const res = await fetch(`${url}/xrpc/com.atproto.sync.getBlob?did=${did}&cid=${cid}`)
      expect(res.status, `blob ${cid} at ${url}`).toBe(200)
      out.set(cid, Buffer.from(await res.arrayBuffer()))
    }
    return out
  }

  it('restores every record and blob from the backup, with the user signing the identity over', async () => {
    const pdsA = a as NonNullable<typeof a>
    const alice: SeededAccount = await seedReferenceAccount(pdsA.url, {
      handle: 'restored.test',
      email: 'restored@example.com',
      password: 'restored-password',
      posts: 40,
      images: 3,
      follows: 4,
    })
    const directory = new plcLib.Client(plc.url)
    // The user's key, put first while A still worked (what pds-identity add-key does).
    const user = await P256Keypair.create({ exportable: true })
    await directory.updateData(alice.did, pdsA.pds.ctx.plcRotationKey, (op) => ({
      ...op,
      rotationKeys: [user.did(), ...op.rotationKeys],
    }))
    const oldKey = (await directory.getDocumentData(alice.did)).verificationMethods.atproto as string

    // The backup, with the preferences and email (an app password's session).
    const agent = new AtpAgent({ service: pdsA.url })
    await agent.login({ identifier: alice.did, password: alice.password })
    const appPassword = (await agent.com.atproto.server.createAppPassword({ name: 'backups' })).data.password
    const keys = await generateArchiveKeys()
    const store = new FsArchiveStore(join(work, 'archive'))
    await backupAccount(alice.did, {
      archive: new AccountArchive(store, keys, alice.did),
      resolver: new PlcDidResolver(plc.url),
      workDir: work,
      authorized: await appPasswordClient(pdsA.url, alice.did, appPassword),
    })
    const before = await recordsIn(pdsA.url, alice.did, oldKey)
    const blobCids = (
      (await (await fetch(`${pdsA.url}/xrpc/com.atproto.sync.listBlobs?did=${alice.did}`)).json()) as {
        cids: string[]
      }
    ).cids
    expect(blobCids).toHaveLength(3)
    const blobsBefore = await blobsAt(pdsA.url, alice.did, blobCids)
    const preferences = (await agent.app.bsky.actor.getPreferences()).data.preferences

    // A crashes for good: the process is gone and so is its disk.
    await pdsA.close()
    a = undefined
    await rm(join(work, 'pds-a'), { recursive: true, force: true })

    readApi = Fastify()
    await readApi.register(backupReadApi, {
      store,
      keys,
      resolver: new PlcDidResolver(plc.url),
      serviceDid: 'did:web:backups.example.com',
      operatorToken: OPERATOR_TOKEN,
      workDir: work,
    })
    readUrl = await readApi.listen({ port: 0, host: '127.0.0.1' })

    // C's engine on a durable store, so that it can be restarted while waiting for the user.
    const storePath = join(work, 'c-transfers.sqlite')
    const engineAt = (transfers: SqliteInboundTransferStore) =>
      new TransferEngine({
        sink: c.sink,
        store: transfers,
        keys: c.keys,
        resolver: new PlcDidResolver(plc.url),
        plc: directory,
        serviceUrl: c.url,
        rotationKey: c.pds.ctx.plcRotationKey.did(),
      })
    const firstStore = new SqliteInboundTransferStore(storePath)
    let engine = engineAt(firstStore)
    const started = await engine.startRestore({
      did: alice.did,
      client: restoreSourceClient(readUrl, alice.did, OPERATOR_TOKEN),
      userKey: user.did(),
    })
    expect(started).toMatchObject({
      dialect: 'restore',
      restore: { userKey: user.did(), repoSigningKey: oldKey },
    })
    await engine.wait(started.transferId)
    // C restarts while the user finds their key: the restore is still waiting for them, not lost.
    await engine.close()
    firstStore.close()
    const store2 = new SqliteInboundTransferStore(storePath)
    engine = engineAt(store2)
    await engine.recover()
    const held = (await engine.get(started.transferId)) as InboundTransfer
    expect(held.failure).toBeUndefined()
    expect(held).toMatchObject({
      status: 'importing',
      stage: 'awaitingRecovery',
      missingBlobs: [],
      notRestored: [],
    })
    expect(held.plcCodeRequestedAt).toBeUndefined()

    // What the user signs, prepared by C; signed where the key is, over exactly those bytes.
    const request = await engine.restoreOperation(started.transferId)
    expect(request.kind).toBe('update')
    expect(request.operation.rotationKeys).toEqual([user.did(), c.pds.ctx.plcRotationKey.did()])
    const sig = await user.sign(new Uint8Array(Buffer.from(request.bytesToSign, 'base64')))
    const signed = { ...request.operation, sig: Buffer.from(sig).toString('base64url') }

    // A tampered operation (pointing elsewhere) is refused and nothing is submitted.
    const elsewhere = {
      ...signed,
      services: { atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: 'https://evil.example.com' } },
    }
    await expect(engine.completeRestore(started.transferId, { signedOperation: elsewhere })).rejects.toThrow(
      /not signed by your key/,
    )
    expect((await directory.getDocumentData(alice.did)).verificationMethods.atproto).toBe(oldKey)

    const done = await engine.completeRestore(started.transferId, { signedOperation: signed })
    store2.close()
    expect(done.failure).toBeUndefined()
    expect(done).toMatchObject({ status: 'completed', stage: 'activated' })

    const data = await directory.getDocumentData(alice.did)
    expect(data.services.atproto_pds?.endpoint).toBe(c.url)
    expect(data.verificationMethods.atproto).toBe(done.signingKey)
    expect(data.rotationKeys).toEqual([user.did(), c.pds.ctx.plcRotationKey.did()])

    // Every record, verified at C with the key PLC now names; every blob byte for byte.
    expect(await recordsIn(c.url, alice.did, done.signingKey as string)).toEqual(before)
    expect(await blobsAt(c.url, alice.did, blobCids)).toEqual(blobsBefore)
    expect(await c.sink.isActive(alice.did)).toBe(true)
    const account = await c.pds.ctx.accountManager.getAccount(alice.did as `did:plc:${string}`)
    expect(account?.email).toBe('restored@example.com')
    const prefs = await c.pds.ctx.actorStore.read(alice.did as `did:plc:${string}`, (store) =>
      store.pref.getPreferences('app.bsky', { hasAccessFull: true } as never),
    )
    expect(prefs).toEqual(preferences.filter((p) => p.$type !== 'app.bsky.actor.defs#declaredAgePref'))

    // Relays hear of it from C: the identity, the account active, the re-signed head.
    const of = (type: string) =>
      firehose.filter(
        (e) => e.$type === `com.atproto.sync.subscribeRepos#${type}` && (e.did ?? e.repo) === alice.did,
      )
    await waitFor(() => of('account').some((e) => e.active === true))
    expect(of('identity')).not.toHaveLength(0)
    expect(of('sync')).not.toHaveLength(0)
  })

  it('undoes a hostile change by the old PDS (a fork within 72 hours), restoring what the backup holds', async () => {
    const hostile = await startPlainPds(plc.namedUrl)
    try {
      const bob = await seedReferenceAccount(hostile.url, {
        handle: 'forked.test',
        email: 'forked@example.com',
        password: 'forked-password',
        posts: 12,
        images: 1,
        follows: 2,
      })
      const directory = new plcLib.Client(plc.url)
      const user = await P256Keypair.create()
      await directory.updateData(bob.did, hostile.pds.ctx.plcRotationKey, (op) => ({
        ...op,
        rotationKeys: [user.did(), ...op.rotationKeys],
      }))
      const oldKey = (await directory.getDocumentData(bob.did)).verificationMethods.atproto as string
      const keys = await generateArchiveKeys()
      const store = new FsArchiveStore(join(work, 'archive-forked'))
      await backupAccount(bob.did, {
        archive: new AccountArchive(store, keys, bob.did),
        resolver: new PlcDidResolver(plc.url),
        workDir: work,
      })
      const before = await recordsIn(hostile.url, bob.did, oldKey)
      // The old PDS turns: with its own key it moves the identity to an attacker and drops the user's key.
      const attacker = await P256Keypair.create()
      await directory.updateData(bob.did, hostile.pds.ctx.plcRotationKey, (op) => ({
        ...op,
        rotationKeys: [hostile.pds.ctx.plcRotationKey.did()],
        verificationMethods: { atproto: attacker.did() },
        services: {
          atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: 'https://attacker.example.com' },
        },
      }))
      const api = Fastify()
      await api.register(backupReadApi, {
        store,
        keys,
        resolver: new PlcDidResolver(plc.url),
        serviceDid: 'did:web:backups.example.com',
        operatorToken: OPERATOR_TOKEN,
        workDir: work,
      })
      const url = await api.listen({ port: 0, host: '127.0.0.1' })
      try {
        const started = await c.engine.startRestore({
          did: bob.did,
          client: restoreSourceClient(url, bob.did, OPERATOR_TOKEN),
          userKey: user.did(),
        })
        // The copy is verified against the key before the hostile change, not the attacker's.
        expect(started.restore).toMatchObject({ plan: 'fork', repoSigningKey: oldKey })
        const held = await c.engine.wait(started.transferId)
        expect(held.failure).toBeUndefined()
        // Preferences and email were not in this backup (made without a sign-in): said, not failed.
        expect(held.notRestored).toEqual([
          expect.stringMatching(/^preferences \(.*PreferencesNotBackedUp/),
          'email (the copy does not hold it)',
        ])
        const request = await c.engine.restoreOperation(started.transferId)
        expect(request.kind).toBe('fork')
        expect(request.nullifies).toHaveLength(1)
        const sig = await user.sign(new Uint8Array(Buffer.from(request.bytesToSign, 'base64')))
        const done = await c.engine.completeRestore(started.transferId, {
          signedOperation: { ...request.operation, sig: Buffer.from(sig).toString('base64url') },
        })
        expect(done).toMatchObject({ status: 'completed', stage: 'activated' })
        const log = await directory.getAuditableLog(bob.did)
        expect(log.filter((e) => e.nullified)).toHaveLength(1)
        const data = await directory.getDocumentData(bob.did)
        expect(data.services.atproto_pds?.endpoint).toBe(c.url)
        expect(data.rotationKeys).toEqual([user.did(), c.pds.ctx.plcRotationKey.did()])
        expect(await recordsIn(c.url, bob.did, done.signingKey as string)).toEqual(before)
      } finally {
        await api.close()
      }
    } finally {
      await hostile.close()
    }
  })

  it('refuses a restore whose key has no say over the identity, before pulling anything', async () => {
    const stranger = await P256Keypair.create()
    const directory = new plcLib.Client(plc.url)
    const bystander = await P256Keypair.create()
    const did = await directory.createDid({
      signingKey: bystander.did(),
      handle: 'nokey.test',
      pds: 'https://gone.example.com',
      rotationKeys: [bystander.did()],
      signer: bystander,
    })
    await expect(
      c.engine.startRestore({
        did,
        client: restoreSourceClient(readUrl, did, OPERATOR_TOKEN),
        userKey: stranger.did(),
      }),
    ).rejects.toMatchObject({
      code: 'RecoveryImpossible',
      reason: 'NoUserKey',
      message: expect.stringMatching(
        /never been one of this identity's rotation keys.*Next time, add a key/s,
      ),
    })
    expect(await c.engine.unfinished(did)).toBeUndefined()
  })

  it('refuses to undo a hostile change after 72 hours (clock moved), with the reason and what is left', async () => {
    const directory = new plcLib.Client(plc.url)
    const user = await P256Keypair.create()
    const server = await P256Keypair.create()
    const did = await directory.createDid({
      signingKey: server.did(),
      handle: 'late.test',
      pds: 'https://old.example.com',
      rotationKeys: [user.did(), server.did()],
      signer: server,
    })
    // The old server drops the user's key and moves the identity away.
    await directory.updateData(did, server, (op) => ({
      ...op,
      rotationKeys: [server.did()],
      services: {
        atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: 'https://attacker.example.com' },
      },
    }))
    const stores: SqliteInboundTransferStore[] = []
    const engineAt = async (hoursLater: number) => {
      const store = new SqliteInboundTransferStore(join(work, `late-${hoursLater}.sqlite`))
      stores.push(store)
      return new TransferEngine({
        sink: c.sink,
        store,
        keys: c.keys,
        resolver: new PlcDidResolver(plc.url),
        plc: directory,
        serviceUrl: c.url,
        rotationKey: c.pds.ctx.plcRotationKey.did(),
        clock: () => new Date(Date.now() + hoursLater * 3600_000),
      })
    }
    const late = await engineAt(73)
    await expect(
      late.startRestore({
        did,
        client: restoreSourceClient(readUrl, did, OPERATOR_TOKEN),
        userKey: user.did(),
      }),
    ).rejects.toMatchObject({
      code: 'RecoveryImpossible',
      reason: 'WindowClosed',
      message: expect.stringMatching(/72 hours.*What you can do/s),
    })
    expect(await late.unfinished(did)).toBeUndefined()
    // An hour before the window closes the same key is admitted, as a fork of the hostile change.
    const inTime = await engineAt(71)
    const admitted = await inTime.startRestore({
      did,
      client: restoreSourceClient(readUrl, did, OPERATOR_TOKEN),
      userKey: user.did(),
    })
    expect(admitted.restore).toMatchObject({ plan: 'fork' })
    await inTime.cancel(admitted.transferId)
    await Promise.all([late.close(), inTime.close()])
    for (const store of stores) store.close()
  })
})
