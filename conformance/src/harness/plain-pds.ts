import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { envToCfg, envToSecrets, PDS } from '@atproto/pds'
import { loadOrCreateSecrets } from '@pds-transfer/atproto-pds'
import { freePort } from './destination-server.ts'

/** The PLC code a reference PDS last "emailed" to the account (kept in its account database). */
export async function emailedPlcToken(pds: PDS, did: string): Promise<string | undefined> {
  const row = await pds.ctx.accountManager.db.db
    .selectFrom('email_token')
    .select('token')
    .where('did', '=', did as never)
    .where('purpose', '=', 'plc_operation')
    .executeTakeFirst()
  return row?.token
}

/**
 * A reference PDS as shipped, without our routes: a source that does not speak 0014. Its data
 * goes to a fresh temporary directory (removed on close), or to `dataDir` (kept).
 */
export async function startPlainPds(
  plcUrl: string,
  options: { dataDir?: string; port?: number } = {},
): Promise<{
  url: string
  pds: PDS
  /** The PLC code last "emailed" to the account (the PDS keeps it in its account database). */
  plcToken(did: string): Promise<string | undefined>
  close(): Promise<void>
}> {
  const dir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'pds-transfer-plain-')))
  await mkdir(dir, { recursive: true })
  const port = options.port ?? (await freePort())
  const secrets = await loadOrCreateSecrets(dir)
  const env = {
    port,
    hostname: 'localhost',
    serviceDid: `did:web:localhost%3A${port}`,
    devMode: true,
    dataDirectory: dir,
    blobstoreDiskLocation: join(dir, 'blobs'),
    didPlcUrl: plcUrl,
    jwtSecret: secrets.jwtSecret,
    dpopSecret: secrets.dpopSecret,
    adminPassword: secrets.adminPassword,
    plcRotationKeyK256PrivateKeyHex: secrets.plcRotationKeyHex,
    inviteRequired: false,
    serviceHandleDomains: ['.test'],
    bskyAppViewUrl: 'http://127.0.0.1:9',
    bskyAppViewDid: 'did:web:appview.invalid',
  }
  const pds = await PDS.create(envToCfg(env), envToSecrets(env))
  await pds.start()
  return {
    url: pds.ctx.cfg.service.publicUrl,
    pds,
    plcToken: (did) => emailedPlcToken(pds, did),
    async close() {
      await pds.destroy()
      if (!options.dataDir) await rm(dir, { recursive: true, force: true })
    },
  }
}
