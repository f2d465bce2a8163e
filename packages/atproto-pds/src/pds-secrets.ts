import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Secp256k1Keypair } from '@atproto/crypto'

/** The secrets a reference PDS needs, made on first start and kept beside its data. */
export interface PdsSecrets {
  jwtSecret: string
  dpopSecret: string
  adminPassword: string
  /** K256 private key, hex: the PDS's PLC rotation key. */
  plcRotationKeyHex: string
}

export async function loadOrCreateSecrets(dataDir: string): Promise<PdsSecrets> {
  const path = join(dataDir, 'secrets.json')
  try {
    return JSON.parse(await readFile(path, 'utf8')) as PdsSecrets
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const rotation = await Secp256k1Keypair.create({ exportable: true })
  const secrets: PdsSecrets = {
    jwtSecret: randomBytes(32).toString('hex'),
    dpopSecret: randomBytes(32).toString('hex'),
    adminPassword: randomBytes(16).toString('hex'),
    plcRotationKeyHex: Buffer.from(await rotation.export()).toString('hex'),
  }
  await writeFile(path, JSON.stringify(secrets, null, 2), { mode: 0o600 })
  return secrets
}
