import { join } from 'node:path'
import { AccountArchive, type ArchiveKeys, FsArchiveStore, generateArchiveKeys } from '@pds-transfer/archive'
import { backupAccount, backupReadApi } from '@pds-transfer/backup'
import { PlcDidResolver, type SourceClient } from '@pds-transfer/destination'
import Fastify, { type FastifyInstance } from 'fastify'

/** The operator token the served backups of these tests answer to. */
export const BACKUP_OPERATOR_TOKEN = 'backup-operator-secret'

/** A backup of one account in our archive, and the backup read API serving it on loopback. */
export interface ServedBackup {
  url: string
  token: string
  store: FsArchiveStore
  keys: ArchiveKeys
  /** The read API, for hooks a test adds before `listen` (`beforeListen`). */
  api: FastifyInstance
  close(): Promise<void>
}

/**
 * Backs `did` up from its PDS into `<workDir>/<name>` (with `authorized`, the preferences and
 * email too) and serves it over the sync endpoints, as `pds-backup serve` does.
 */
export async function servedBackup(params: {
  did: string
  plcUrl: string
  workDir: string
  name?: string
  authorized?: SourceClient
  /** Runs on the read API before it listens (a test's fault hooks). */
  beforeListen?: (api: FastifyInstance) => void
}): Promise<ServedBackup> {
  const keys = await generateArchiveKeys()
  const store = new FsArchiveStore(join(params.workDir, params.name ?? 'archive'))
  const resolver = new PlcDidResolver(params.plcUrl)
  await backupAccount(params.did, {
    archive: new AccountArchive(store, keys, params.did),
    resolver,
    workDir: params.workDir,
    ...(params.authorized && { authorized: params.authorized }),
  })
  const api = Fastify()
  params.beforeListen?.(api)
  await api.register(backupReadApi, {
    store,
    keys,
    resolver,
    serviceDid: 'did:web:backups.example.com',
    operatorToken: BACKUP_OPERATOR_TOKEN,
    workDir: params.workDir,
  })
  const url = await api.listen({ port: 0, host: '127.0.0.1' })
  return { url, token: BACKUP_OPERATOR_TOKEN, store, keys, api, close: () => api.close() }
}
