import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as plc from '@did-plc/lib'
import { NSID, WELL_KNOWN_PATH } from '@pds-transfer/core'
import { bearerSourceClient } from '@pds-transfer/destination'
import type { AccountSource } from '@pds-transfer/source'
import Fastify, { type FastifyReply } from 'fastify'
import { buildAccount, type FixtureAccount, fixtureBytes } from '../fixtures/build-account.ts'
import { carForOtherDid, collect, forgedCar } from '../harness/hostile-streams.ts'
import { type SourceServer, startSourceServer } from '../harness/source-server.ts'
import { TRANSFER_SCOPES } from '../harness/test-authorizer.ts'
import { SqliteAccountStore } from '../store/sqlite-account-store.ts'
import { BAD_PREFERENCES, type HostileAccount } from './hostile-source.ts'

/** What a hostile draft source does to one account's pull or completion. */
export type HostileDraftBehaviour =
  | 'honest'
  | 'car-wrong-key'
  | 'car-other-did'
  | 'getblob-wrong-bytes'
  | 'private-state-invalid'
  | 'preferences-item-invalid'
  | 'complete-drops-user-key'
  | 'complete-changes-handle'

/** One account of the hostile draft source (same shape as the v1 hostile source's). */
export type HostileDraftAccount = Omit<HostileAccount, 'behaviour'> & { behaviour: HostileDraftBehaviour }

/**
 * A malicious source serving the current draft (spec/dialect-draft.md), as a real HTTP server: no
 * well-known (so a destination tells it as draft by the unauthenticated probe), the draft's JSON
 * exportAccount and completeTransfer from our honest source plugin behind it, and the sync
 * endpoints the destination pulls the data over (getRepo, getLatestCommit, listBlobs, getBlob)
 * served from its store, where the attacks are: a repo signed by another key or naming another
 * DID, a blob whose bytes do not hash to its CID, a private state with a known field of the wrong
 * type, preferences an app.bsky lexicon refuses (with `preferences` negotiated), a completeTransfer operation (validly signed by the source's rotation
 * key, so PLC itself would take it) that drops the user's key or also changes the handle.
 */
export interface HostileDraftSource {
  url: string
  plcUrl: string
  createAccount(behaviour: HostileDraftBehaviour): Promise<HostileDraftAccount>
  /** The PLC code last "emailed" for an account (requestPlcOperationSignature). */
  plcToken(did: string): string | undefined
  /** Whether the destination called getPreferences for an account. */
  preferencesAsked(did: string): boolean
  close(): Promise<void>
}

export async function startHostileDraftSource(options: {
  plcUrl: string
  /** The destination's OAuth client_id (the inner source records transfers by it). */
  destinationClientId: string
  host?: string
  port?: number
  publicUrl?: string
}): Promise<HostileDraftSource> {
  const inner: SourceServer = await startSourceServer({
    plc: { url: options.plcUrl, close: async () => {} },
    dialects: ['draft'],
    draftCapabilities: ['base'],
    exportsPerDestinationPerHour: 10_000,
  })
  const scratchDir = await mkdtemp(join(tmpdir(), 'pds-transfer-hostile-draft-'))
  const scratch = await SqliteAccountStore.open(scratchDir)
  const app = Fastify({ logger: false, forceCloseConnections: true, bodyLimit: 1 << 20 })
  const byToken = new Map<string, { account: FixtureAccount; behaviour: HostileDraftBehaviour }>()
  const byDid = new Map<string, { account: FixtureAccount; behaviour: HostileDraftBehaviour }>()
  const preferencesCalled = new Set<string>()
  let url = ''

  const innerClient = (did: string) =>
    bearerSourceClient(
      inner.url,
      inner.auth.issue({ did, clientId: options.destinationClientId }, TRANSFER_SCOPES),
    )
  /** Where the repo this account's sync endpoints serve is kept, and under which DID. */
  const forged = new Map<string, string>()
  const repoOf = (did: string): { store: AccountSource; did: string } => {
    const other = forged.get(did)
    return other ? { store: scratch, did: other } : { store: inner.store, did }
  }

  /** completeTransfer's answer re-signed by the source's rotation key, changed as the behaviour says. */
  async function hostileOperation(behaviour: HostileDraftBehaviour, op: plc.Operation) {
    const { sig: _sig, ...unsigned } = op
    const changed =
      behaviour === 'complete-drops-user-key'
        ? { ...unsigned, rotationKeys: unsigned.rotationKeys.slice(1) }
        : { ...unsigned, alsoKnownAs: ['at://someone-else.test'] }
    return plc.signOperation(changed, inner.rotationKey)
  }

  const refuse = (reply: FastifyReply, status: number, error: string, message: string) =>
    reply.code(status).type('application/json').send({ error, message })

  app.get(WELL_KNOWN_PATH, (_req, reply) => refuse(reply, 404, 'NotFound', 'no transfer document here'))
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body))
  app.all('/xrpc/*', async (request, reply) => {
    const token = request.headers.authorization?.replace(/^(Bearer|DPoP) /, '') ?? ''
    const entry = byToken.get(token)
    const parsed = new URL(request.url, 'http://x')
    const nsid = parsed.pathname.replace('/xrpc/', '')
    const q = parsed.searchParams
    const isTransfer = nsid.startsWith('com.atproto.transfer.')
    if (!entry) {
      // The draft's name for a missing token (how a destination tells a draft source, §4).
      if (isTransfer) return refuse(reply, 401, 'TransferNotAuthorized', 'OAuth token missing')
      if (!nsid.startsWith('com.atproto.sync.')) return refuse(reply, 401, 'AuthMissing', 'no token')
    }
    if (isTransfer && entry) {
      const res = await innerClient(entry.account.did).fetch(request.url, {
        method: request.method,
        headers: { 'content-type': 'application/json' },
        ...(request.method !== 'GET' && request.body ? { body: request.body as Buffer } : {}),
      })
      const json = (await res.json().catch(() => ({}))) as Record<string, unknown>
      if (nsid === NSID.exportAccount && res.ok && entry.behaviour === 'private-state-invalid') {
        // A known field (§5) of the wrong type.
        return reply.send({
          ...json,
          privateState: { ...(json.privateState as object), emailConfirmed: 'yes' },
        })
      }
      if (nsid === NSID.exportAccount && res.ok && entry.behaviour === 'preferences-item-invalid') {
        // Negotiated as a source serving app.bsky would: only if asked.
        const asked = (JSON.parse(String(request.body)) as { capabilities?: string[] }).capabilities ?? []
        const capabilities = asked.filter((c) => c === 'base' || c === 'preferences')
        return reply.send({ ...json, capabilities })
      }
      if (nsid === NSID.completeTransfer && res.ok && entry.behaviour.startsWith('complete-')) {
        const { signedPlcOperation } = json as { signedPlcOperation: plc.Operation }
        return reply.send({ signedPlcOperation: await hostileOperation(entry.behaviour, signedPlcOperation) })
      }
      return reply.code(res.status).send(json)
    }
    const did = q.get('did') ?? entry?.account.did ?? ''
    switch (nsid) {
      case 'com.atproto.sync.getLatestCommit': {
        const repo = repoOf(did)
        const snap = await repo.store.snapshotRepo(repo.did)
        await snap.release()
        return reply.send({ cid: snap.commitCid, rev: snap.rev })
      }
      case 'com.atproto.sync.getRepo': {
        const since = q.get('since') ?? undefined
        const repo = repoOf(did)
        const snap = await repo.store.snapshotRepo(repo.did, since ? { since } : {})
        try {
          const car = await collect(snap.open())
          return reply.type('application/vnd.ipld.car').send(Buffer.from(car))
        } finally {
          await snap.release()
        }
      }
      case 'com.atproto.sync.listBlobs': {
        const cursor = q.get('cursor') ?? undefined
        const page = await inner.store.listBlobs(did, {
          limit: Number(q.get('limit') ?? 500),
          ...(cursor && { cursor }),
        })
        return reply.send({ cids: page.blobs.map((b) => b.cid), ...(page.cursor && { cursor: page.cursor }) })
      }
      case 'com.atproto.sync.getBlob': {
        const cid = q.get('cid') ?? ''
        const held = byDid.get(did)
        const first = held && [...held.account.blobs.keys()].sort()[0]
        if (held?.behaviour === 'getblob-wrong-bytes' && cid === first) {
          const real = held.account.blobs.get(cid) as Uint8Array
          return reply.type('application/octet-stream').send(Buffer.from(fixtureBytes(real.length, 4242)))
        }
        const stream = await inner.store.openBlob(did, cid)
        if (!stream) return refuse(reply, 400, 'BlobNotFound', `no blob ${cid}`)
        return reply.type('application/octet-stream').send(Buffer.from(await collect(stream)))
      }
      case 'app.bsky.actor.getPreferences':
        preferencesCalled.add(did)
        if (entry?.behaviour === 'preferences-item-invalid')
          return reply.send({ preferences: BAD_PREFERENCES })
        return reply.send({ preferences: await inner.store.getPreferences(did) })
      case 'com.atproto.identity.requestPlcOperationSignature':
        await inner.store.requestPlcToken(did)
        return reply.send({})
      case 'com.atproto.identity.getRecommendedDidCredentials':
        return reply.send({ rotationKeys: [inner.rotationKey.did()] })
      default:
        return refuse(reply, 501, 'MethodNotImplemented', `${nsid} is not served here`)
    }
  })

  await app.listen({ host: options.host ?? '127.0.0.1', port: options.port ?? 0 })
  const { port } = app.server.address() as AddressInfo
  url = options.publicUrl ?? `http://${options.host ?? '127.0.0.1'}:${port}`
  return {
    url,
    plcUrl: options.plcUrl,
    async createAccount(behaviour) {
      const account = await buildAccount(inner.store, {
        plcUrl: options.plcUrl,
        pdsUrl: url,
        pdsRotationKey: inner.rotationKey,
        shape: { posts: 12, blobSizes: Array.from({ length: 4 }, (_, i) => 12_000 + i * 517) },
      })
      if (behaviour === 'car-wrong-key') {
        await forgedCar(scratch, account.did)
        forged.set(account.did, account.did)
      }
      if (behaviour === 'car-other-did') {
        // Signed with the account's real key, for a DID that is not the account's.
        const other = `did:plc:${randomBytes(12)
          .toString('hex')
          .replace(/[0189]/g, 'a')
          .slice(0, 24)}`
        await carForOtherDid(scratch, other, account.signingKey)
        forged.set(account.did, other)
      }
      const token = randomBytes(24).toString('base64url')
      byToken.set(token, { account, behaviour })
      byDid.set(account.did, { account, behaviour })
      const blobs = [...account.blobs.keys()]
      const mustNotStore =
        behaviour === 'car-wrong-key' ||
        behaviour === 'car-other-did' ||
        behaviour === 'private-state-invalid'
          ? { repo: true, blobs }
          : behaviour === 'getblob-wrong-bytes'
            ? { repo: false, blobs: [...blobs].sort().slice(0, 1) }
            : { repo: false, blobs: [] }
      return { did: account.did, behaviour, token, blobs, mustNotStore }
    },
    plcToken: (did) => inner.store.outbox.filter((m) => m.did === did).at(-1)?.token,
    preferencesAsked: (did) => preferencesCalled.has(did),
    async close() {
      await app.close()
      await inner.close()
      scratch.close()
      await rm(scratchDir, { recursive: true, force: true })
    },
  }
}
