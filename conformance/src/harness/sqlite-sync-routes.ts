import type { FastifyInstance, FastifyReply } from 'fastify'
import type { SqliteAccountStore } from '../store/sqlite-account-store.ts'
import { collect } from './hostile-streams.ts'
import type { TestTokenAuth } from './test-auth.ts'

/**
 * What a draft destination pulls from the SQLite test PDS besides the transfer methods (getBlob
 * is the source plugin's): the repo, its head, the blob listing, preferences, the session's email, and the PLC code
 * and recommended credentials of completion, honestly from the store. The methods that act for
 * the account take the test token, granting their NSID.
 */
export function registerSqliteSyncRoutes(
  app: FastifyInstance,
  options: { store: SqliteAccountStore; auth: TestTokenAuth; rotationKey: string },
): void {
  const { store, auth } = options
  const refuse = (reply: FastifyReply, status: number, error: string, message: string) =>
    reply.code(status).type('application/json').send({ error, message })
  type Query = { did?: string; since?: string; cursor?: string; limit?: string }

  app.get<{ Querystring: Query }>('/xrpc/com.atproto.sync.getLatestCommit', async (request, reply) => {
    if (!(await store.getAccount(request.query.did ?? '')))
      return refuse(reply, 400, 'RepoNotFound', 'no such repo')
    const snap = await store.snapshotRepo(request.query.did as string)
    await snap.release()
    return reply.send({ cid: snap.commitCid, rev: snap.rev })
  })
  app.get<{ Querystring: Query }>('/xrpc/com.atproto.sync.getRepo', async (request, reply) => {
    const { did, since } = request.query
    if (!(await store.getAccount(did ?? ''))) return refuse(reply, 400, 'RepoNotFound', 'no such repo')
    const snap = await store.snapshotRepo(did as string, since ? { since } : {})
    try {
      const car = await collect(snap.open())
      return reply.type('application/vnd.ipld.car').send(Buffer.from(car))
    } finally {
      await snap.release()
    }
  })
  app.get<{ Querystring: Query }>('/xrpc/com.atproto.sync.listBlobs', async (request, reply) => {
    const { did, cursor, limit } = request.query
    const page = await store.listBlobs(did ?? '', { limit: Number(limit ?? 500), ...(cursor && { cursor }) })
    return reply.send({ cids: page.blobs.map((b) => b.cid), ...(page.cursor && { cursor: page.cursor }) })
  })
  app.get('/xrpc/app.bsky.actor.getPreferences', async (request, reply) => {
    const caller = await auth.verify(request, 'app.bsky.actor.getPreferences').catch(() => undefined)
    if (!caller) return refuse(reply, 401, 'AuthMissing', 'no token')
    return reply.send({ preferences: await store.getPreferences(caller.did) })
  })
  // A plain destination reads the email here (the one private field a plain PDS shares).
  app.get('/xrpc/com.atproto.server.getSession', async (request, reply) => {
    const caller = await auth.verify(request, 'com.atproto.server.getSession').catch(() => undefined)
    if (!caller) return refuse(reply, 401, 'AuthMissing', 'no token')
    const { email, emailConfirmed } = await store.getAccountState(caller.did)
    return reply.send({
      did: caller.did,
      ...(email !== undefined && { email }),
      ...(emailConfirmed !== undefined && { emailConfirmed }),
    })
  })
  app.post('/xrpc/com.atproto.identity.requestPlcOperationSignature', async (request, reply) => {
    const nsid = 'com.atproto.identity.requestPlcOperationSignature'
    const caller = await auth.verify(request, nsid).catch(() => undefined)
    if (!caller) return refuse(reply, 401, 'AuthMissing', 'no token')
    await store.requestPlcToken(caller.did)
    return reply.send({})
  })
  app.get('/xrpc/com.atproto.identity.getRecommendedDidCredentials', async (_request, reply) =>
    reply.send({ rotationKeys: [options.rotationKey] }),
  )
}

/** The NSIDs a draft destination's grant needs at the SQLite test PDS beyond the transfer methods. */
export const SQLITE_SYNC_GRANTS = [
  'app.bsky.actor.getPreferences',
  'com.atproto.identity.requestPlcOperationSignature',
  'com.atproto.server.getSession',
]
