import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as plc from '@did-plc/lib'
import { blobCid, CONTENT_TYPE, encodeBlobpack, NSID, WELL_KNOWN_PATH } from '@pds-transfer/core'
import { bearerSourceClient, createTransferId, type SourceClient } from '@pds-transfer/destination'
import Fastify from 'fastify'
import { buildAccount, type FixtureAccount, fixtureBytes } from '../fixtures/build-account.ts'
import { buildRepoCar, flatNode, pathsAtLayer } from '../fixtures/repo-car.ts'
import {
  type CraftedFrame,
  craftedSourceClient,
  frameRewritingClient,
  tamperingClient,
} from '../harness/crafted-source.ts'
import {
  carForOtherDid,
  carWithMismatchedBlock,
  collect,
  cutAfter,
  flipTagOf,
  forgedCar,
  relabel,
  swapAndRenumber,
  wrongBytesBlobpack,
} from '../harness/hostile-streams.ts'
import { type SourceServer, startSourceServer } from '../harness/source-server.ts'
import { TRANSFER_SCOPES } from '../harness/test-authorizer.ts'
import { SqliteAccountStore } from '../store/sqlite-account-store.ts'

/** What the hostile source does to the exportAccount stream of one account. */
export type HostileBehaviour =
  | 'honest'
  | 'tampered-car'
  | 'tampered-blobpack'
  | 'reordered-frames'
  | 'content-type-swap'
  | 'cut-mid-frame'
  | 'cut-at-boundary'
  | 'blob-wrong-cid'
  | 'car-wrong-key'
  | 'did-swap'
  | 'transfer-id-swap'
  | 'account-state-invalid'
  | 'preferences-invalid'
  | 'preferences-item-invalid'
  | 'repo-car-twice'
  | 'car-block-mismatch'
  | 'car-other-did'
  | 'mst-invalid'
  | 'getblob-wrong-bytes'
  | 'complete-drops-recovery-key'

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567'

/**
 * A repo signed with the account's key whose one MST node holds its keys in descending order.
 * All keys are of layer 0 and prefix-compressed against their predecessor, so key order is the
 * only rule broken: a destination that walks the tree without checking it imports the repo.
 */
async function carWithUnorderedMst(account: FixtureAccount): Promise<Uint8Array> {
  const paths = await pathsAtLayer('app.bsky.feed.post', 0, 3)
  return buildRepoCar(
    { did: account.did, key: account.signingKey },
    {
      records: paths.map((path, i) => ({
        path,
        value: { $type: 'app.bsky.feed.post', text: `post ${i}`, createdAt: new Date().toISOString() },
      })),
      root: (leaves) => flatNode([...leaves].reverse()),
    },
  )
}

/** A preferences frame whose second item fails `app.bsky.actor.defs#adultContentPref` (a string, not a boolean). */
export const BAD_PREFERENCES = [
  { $type: 'app.bsky.actor.defs#contentLabelPref', label: 'graphic-media', visibility: 'warn' },
  { $type: 'app.bsky.actor.defs#adultContentPref', enabled: 'yes' },
]

/** One account served by the hostile source, and what its stream will be. */
export interface HostileAccount {
  did: string
  behaviour: HostileBehaviour
  /** The bearer token the destination must present (stands in for the user's OAuth grant). */
  token: string
  /** CIDs of all the account's blobs. */
  blobs: string[]
  /**
   * What the destination must not have committed after refusing this stream: the failing unit
   * and everything after it (units that verified before it may stay, deactivated: D13).
   */
  mustNotStore: { repo: boolean; blobs: string[] }
}

/**
 * What the destination must not hold after refusing `behaviour`'s stream (D19): the failing unit
 * and everything after it; units that verified before it may stay.
 */
function mustNotStoreOf(behaviour: HostileBehaviour, blobs: string[]): HostileAccount['mustNotStore'] {
  switch (behaviour) {
    case 'tampered-car':
    case 'cut-mid-frame':
    case 'car-wrong-key':
    case 'did-swap':
    case 'transfer-id-swap':
    case 'car-block-mismatch':
    case 'car-other-did':
    case 'mst-invalid':
      return { repo: true, blobs }
    case 'tampered-blobpack':
    case 'reordered-frames':
    case 'repo-car-twice':
      return { repo: false, blobs }
    case 'content-type-swap':
      // Frame 2, the second blobpack, is the one relabelled.
      return { repo: false, blobs: blobs.slice(Math.ceil(blobs.length / 2)) }
    case 'blob-wrong-cid':
    case 'getblob-wrong-bytes':
      return { repo: false, blobs: blobs.slice(0, 1) }
    case 'honest':
    case 'cut-at-boundary':
    case 'account-state-invalid':
    case 'preferences-invalid':
    case 'preferences-item-invalid':
    case 'complete-drops-recovery-key':
      return { repo: false, blobs: [] }
  }
}

/**
 * Our malicious source as a real HTTP server, so a remote destination can pull from it: in
 * front of our honest source plugin (SQLite store), it rewrites the exportAccount stream of
 * each account as that account's behaviour says. Every hostile stream is correctly encrypted
 * to the destination's published key, so only the attacked property is wrong. Accounts are
 * real did:plc identities at `plcUrl` whose PDS is this server's public URL: the destination
 * must resolve DIDs through that PLC directory.
 */
export interface HostileSource {
  url: string
  plcUrl: string
  /** Creates a fresh account (DID, signed repo, blobs) whose stream will misbehave as asked. */
  createAccount(behaviour: HostileBehaviour): Promise<HostileAccount>
  /** The PLC code last "emailed" for an account (once its export has been written). */
  plcToken(did: string): string | undefined
  close(): Promise<void>
}

export async function startHostileSource(options: {
  plcUrl: string
  /** The destination's OAuth client_id (its origin publishes the keys the inner source checks, D7). */
  destinationClientId: string
  /** Listen here (default 127.0.0.1, any port). */
  host?: string
  port?: number
  /** URL the destination reaches this server at (default http://host:port). */
  publicUrl?: string
}): Promise<HostileSource> {
  const inner: SourceServer = await startSourceServer({
    plc: { url: options.plcUrl, close: async () => {} },
    blobpackTarget: 32 * 1024,
    exportsPerDestinationPerHour: 10_000,
  })
  const scratchDir = await mkdtemp(join(tmpdir(), 'pds-transfer-hostile-'))
  const scratch = await SqliteAccountStore.open(scratchDir)
  const plcClient = new plc.Client(options.plcUrl)
  const app = Fastify({ logger: false, forceCloseConnections: true, bodyLimit: 1 << 20 })
  const byToken = new Map<
    string,
    { account: FixtureAccount; behaviour: HostileBehaviour; client: SourceClient }
  >()

  // Known once listening (after the routes are registered); accounts are made only then.
  let url = ''

  const innerClient = (did: string) =>
    bearerSourceClient(
      inner.url,
      inner.auth.issue({ did, clientId: options.destinationClientId }, TRANSFER_SCOPES),
    )
  const makeAccount = () =>
    buildAccount(inner.store, {
      plcUrl: options.plcUrl,
      pdsUrl: url,
      pdsRotationKey: inner.rotationKey,
      shape: { posts: 12, blobSizes: Array.from({ length: 4 }, (_, i) => 12_000 + i * 517) },
    })

  /** The account's real CAR and its blobs in two blobpacks, as crafted frames (a literal 0014 stream). */
  async function craftedFrames(account: FixtureAccount, blobs = [...account.blobs.values()]) {
    const car = await inner.store.exportCar(account.did)
    const pack = (list: Uint8Array[]) =>
      collect(
        encodeBlobpack(
          list.map((b) => ({
            cid: blobCid(b),
            size: b.length,
            open: async function* () {
              yield b
            },
          })),
        ),
      )
    const half = Math.ceil(blobs.length / 2)
    return [
      { contentType: CONTENT_TYPE.repoCar, bytes: car },
      { contentType: CONTENT_TYPE.blobpack, bytes: await pack(blobs.slice(0, half)) },
      { contentType: CONTENT_TYPE.blobpack, bytes: await pack(blobs.slice(half)) },
    ]
  }

  /**
   * What a hostile source answers completeTransfer with: a validly signed next operation (the
   * source holds a rotation key) that moves the account as asked but leaves out the user's own
   * recovery key, the first of the rotation keys the destination asked for.
   */
  async function droppingRecoveryKey(did: string, requestBody: string) {
    const asked = JSON.parse(requestBody) as {
      newRotationKeys: string[]
      newSigningKey: string
      newPdsEndpoint: string
    }
    const last = await plcClient.getLastOp(did)
    if (last.type === 'plc_tombstone') throw new Error(`${did} is tombstoned`)
    return plc.createUpdateOp(last, inner.rotationKey, (op) => ({
      ...op,
      rotationKeys: asked.newRotationKeys.slice(1),
      verificationMethods: { ...op.verificationMethods, atproto: asked.newSigningKey },
      services: {
        ...op.services,
        atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: asked.newPdsEndpoint },
      },
    }))
  }

  /** The client whose exportAccount answer the destination gets, for an account and behaviour. */
  async function hostileClient(account: FixtureAccount, behaviour: HostileBehaviour): Promise<SourceClient> {
    const honest = innerClient(account.did)
    const crafted = craftedSourceClient(honest, () => craftedFrames(account))
    switch (behaviour) {
      case 'honest':
        return honest
      case 'tampered-car':
        // The CAR frame's tag flipped, its ciphertext intact: only the tag check can refuse it.
        return frameRewritingClient(honest, flipTagOf(0))
      case 'tampered-blobpack':
        return frameRewritingClient(crafted, flipTagOf(1))
      case 'reordered-frames':
        // Renumbered so the clear numbering is right: only the nonce and AAD notice.
        return frameRewritingClient(crafted, swapAndRenumber(1, 2))
      case 'content-type-swap':
        // The last blobpack relabelled as preferences: a legal kind at that place, so only the AAD
        // (which binds the content type) can catch it.
        return frameRewritingClient(crafted, (frames) =>
          frames.map((f, i) => (i === 2 ? relabel(f, CONTENT_TYPE.preferences) : f.bytes)),
        )
      case 'cut-mid-frame':
        return tamperingClient(honest, cutAfter(1000))
      case 'cut-at-boundary':
        // The last frame (the end manifest when negotiated) never arrives; EOF at a boundary.
        return frameRewritingClient(honest, (frames) => frames.slice(0, -1).map((f) => f.bytes))
      case 'blob-wrong-cid': {
        const car = await inner.store.exportCar(account.did)
        const [real] = [...account.blobs.values()] as [Uint8Array]
        return craftedSourceClient(honest, async () => [
          { contentType: CONTENT_TYPE.repoCar, bytes: car },
          { contentType: CONTENT_TYPE.blobpack, bytes: await wrongBytesBlobpack(real) },
        ])
      }
      case 'car-wrong-key': {
        const car = await forgedCar(scratch, account.did)
        return craftedSourceClient(honest, () => [{ contentType: CONTENT_TYPE.repoCar, bytes: car }])
      }
      case 'car-block-mismatch':
        return craftedSourceClient(honest, async () => {
          const [car, ...rest] = await craftedFrames(account)
          return [
            { ...(car as CraftedFrame), bytes: carWithMismatchedBlock((car as CraftedFrame).bytes) },
            ...rest,
          ]
        })
      case 'car-other-did': {
        // Signed with the account's real key, for a DID that is not the account's.
        const otherDid = `did:plc:${Array.from(randomBytes(24), (b) => BASE32[b % 32]).join('')}`
        const car = await carForOtherDid(scratch, otherDid, account.signingKey)
        return craftedSourceClient(honest, async () => [
          { contentType: CONTENT_TYPE.repoCar, bytes: car },
          ...(await craftedFrames(account)).slice(1),
        ])
      }
      case 'mst-invalid': {
        const car = await carWithUnorderedMst(account)
        return craftedSourceClient(honest, () => [{ contentType: CONTENT_TYPE.repoCar, bytes: car }])
      }
      case 'repo-car-twice':
        // Decision D12: the repo is one frame; a second CAR (the same one) is out of order.
        return craftedSourceClient(honest, async () => {
          const [car, ...rest] = await craftedFrames(account)
          return [car as CraftedFrame, car as CraftedFrame, ...rest]
        })
      case 'getblob-wrong-bytes': {
        // One blob is left out of the stream, and getBlob answers it with other bytes.
        const [withheld, ...sent] = [...account.blobs]
        const [cid, bytes] = withheld as [string, Uint8Array]
        const stream = craftedSourceClient(honest, () =>
          craftedFrames(
            account,
            sent.map(([, b]) => b),
          ),
        )
        return {
          url: honest.url,
          fetch(path, init) {
            if (!path.startsWith('/xrpc/com.atproto.sync.getBlob?') || !path.includes(cid))
              return stream.fetch(path, init)
            const wrong = fixtureBytes(bytes.length, 4242)
            return Promise.resolve(
              new Response(wrong, {
                headers: {
                  'content-type': 'application/octet-stream',
                  'content-length': String(wrong.length),
                },
              }),
            )
          },
        }
      }
      case 'complete-drops-recovery-key':
        return {
          url: honest.url,
          async fetch(path, init) {
            const res = await honest.fetch(path, init)
            if (path !== `/xrpc/${NSID.completeTransfer}` || !res.ok) return res
            await res.body?.cancel()
            return Response.json({
              signedPlcOperation: await droppingRecoveryKey(account.did, String(init?.body)),
            })
          },
        }
      case 'did-swap': {
        // A real, correctly encrypted stream of another account, sent for this one.
        const other = await makeAccount()
        const otherClient = innerClient(other.did)
        return {
          url: honest.url,
          fetch: (path, init) => {
            if (path !== `/xrpc/${NSID.exportAccount}`) return honest.fetch(path, init)
            const body = { ...JSON.parse(String(init?.body)), did: other.did }
            return otherClient.fetch(path, { ...init, body: JSON.stringify(body) })
          },
        }
      }
      case 'account-state-invalid':
        // A correctly encrypted private state that is a CBOR array, not a map (§2.8).
        return craftedSourceClient(honest, async () => [
          ...(await craftedFrames(account)),
          { contentType: CONTENT_TYPE.accountState, bytes: Uint8Array.of(0x80) },
        ])
      case 'preferences-invalid':
        // Preferences that are a JSON object, not an array of app.bsky.actor.defs#preferences.
        return craftedSourceClient(honest, async () => [
          ...(await craftedFrames(account)),
          { contentType: CONTENT_TYPE.preferences, bytes: new TextEncoder().encode('{"not":"an array"}') },
        ])
      case 'preferences-item-invalid':
        // An array of well-formed items, one of which the app.bsky lexicon refuses.
        return craftedSourceClient(honest, async () => [
          ...(await craftedFrames(account)),
          {
            contentType: CONTENT_TYPE.preferences,
            bytes: new TextEncoder().encode(JSON.stringify(BAD_PREFERENCES)),
          },
        ])
      case 'transfer-id-swap': {
        // A fresh one per account: the inner source refuses a transferId another transfer used.
        const other = createTransferId()
        return tamperingClient(
          honest,
          (b) => b,
          (req) => ({ ...req, transferId: other }),
        )
      }
    }
  }

  // Everything the destination calls goes to the inner source as the account's client; the
  // well-known document (no auth) is the inner source's own.
  app.get(WELL_KNOWN_PATH, async (_req, reply) => {
    const res = await fetch(`${inner.url}${WELL_KNOWN_PATH}`)
    reply.code(res.status).header('cache-control', res.headers.get('cache-control') ?? 'no-store')
    return reply.type('application/json').send(await res.text())
  })
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body))
  app.all('/xrpc/*', async (request, reply) => {
    const token = request.headers.authorization?.replace(/^(Bearer|DPoP) /, '') ?? ''
    const entry = byToken.get(token)
    if (!entry) {
      return reply
        .code(401)
        .header('www-authenticate', 'Bearer')
        .send({ error: 'TransferNotAuthorized', message: 'unknown token' })
    }
    const path = request.url
    const res = await entry.client.fetch(path, {
      method: request.method,
      headers: { 'content-type': String(request.headers['content-type'] ?? 'application/json') },
      ...(request.method !== 'GET' && request.body ? { body: request.body as Buffer } : {}),
    })
    reply.code(res.status)
    res.headers.forEach((value, name) => {
      if (!['content-length', 'transfer-encoding', 'connection', 'keep-alive'].includes(name))
        reply.header(name, value)
    })
    return reply.send(res.body ?? '')
  })

  await app.listen({ host: options.host ?? '127.0.0.1', port: options.port ?? 0 })
  const { port } = app.server.address() as AddressInfo
  url = options.publicUrl ?? `http://${options.host ?? '127.0.0.1'}:${port}`
  return {
    url,
    plcUrl: options.plcUrl,
    async createAccount(behaviour) {
      const account = await makeAccount()
      const token = randomBytes(24).toString('base64url')
      byToken.set(token, { account, behaviour, client: await hostileClient(account, behaviour) })
      const blobs = [...account.blobs.keys()]
      const mustNotStore = mustNotStoreOf(behaviour, blobs)
      return { did: account.did, behaviour, token, blobs, mustNotStore }
    },
    plcToken: (did) => inner.store.outbox.filter((m) => m.did === did).at(-1)?.token,
    async close() {
      await app.close()
      await inner.close()
      scratch.close()
      await rm(scratchDir, { recursive: true, force: true })
    },
  }
}
