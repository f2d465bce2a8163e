import { readFile, writeFile } from 'node:fs/promises'
import { Secp256k1Keypair } from '@atproto/crypto'

/**
 * A PDS's rotation key kept in a file of its data directory, so that a test PDS killed and
 * started again on the same directory is still the key the PLC documents list (a fresh key
 * on restart would make every stored move unverifiable, which no real PDS does).
 */
export async function keypairFile(path: string): Promise<Secp256k1Keypair> {
  const saved = await readFile(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined
    throw err
  })
  if (saved) return Secp256k1Keypair.import(saved, { exportable: true })
  const key = await Secp256k1Keypair.create({ exportable: true })
  // `wx`: two processes starting on one directory must not each write a different key.
  await writeFile(path, await key.export(), { flag: 'wx', mode: 0o600 })
  return key
}
