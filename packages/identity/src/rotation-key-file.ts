import { readFile, writeFile } from 'node:fs/promises'
import { type Keypair, P256Keypair, Secp256k1Keypair } from '@atproto/crypto'
import { IdentityError } from './identity-error.ts'

/**
 * A rotation key as a person keeps it: the JSON file `/migrate` lets the user save (made in the
 * browser, P-256) and `pds-identity keygen` writes (P-256 or secp256k1). `publicKey` is the
 * did:key that goes into the identity's rotation keys; `privateKeyHex` never leaves the device.
 */
export interface RotationKeyFile {
  account?: string
  use?: string
  publicKey: string
  privateKeyHex: string
  privateKeyMultibase?: string
  createdAt?: string
}

const USE = 'PLC rotation key. Keep private. It can undo changes to this identity for 72 hours.'

/** A new key pair and its file (both private parts). */
export async function generateRotationKey(
  options: { curve?: 'p256' | 'k256'; account?: string } = {},
): Promise<{
  keypair: Keypair
  file: RotationKeyFile
}> {
  const keypair =
    options.curve === 'k256'
      ? await Secp256k1Keypair.create({ exportable: true })
      : await P256Keypair.create({ exportable: true })
  const file: RotationKeyFile = {
    ...(options.account && { account: options.account }),
    use: USE,
    publicKey: keypair.did(),
    privateKeyHex: Buffer.from(await keypair.export()).toString('hex'),
    createdAt: new Date().toISOString(),
  }
  return { keypair, file }
}

/** The keypair of a key file; the curve is the one its did:key names. */
export async function rotationKeypair(file: RotationKeyFile): Promise<Keypair> {
  if (typeof file.publicKey !== 'string' || !file.publicKey.startsWith('did:key:z'))
    throw new IdentityError(
      'InvalidKeyFile',
      'the key file has no publicKey (did:key:z…)',
      'use a file saved by /migrate or written by pds-identity keygen',
    )
  if (typeof file.privateKeyHex !== 'string' || !/^[0-9a-f]{64}$/.test(file.privateKeyHex))
    throw new IdentityError(
      'InvalidKeyFile',
      'the key file has no privateKeyHex (64 hex digits)',
      'use a file saved by /migrate or written by pds-identity keygen',
    )
  // did:key multicodec: p256-pub is 0x1200 ("zDn…"), secp256k1-pub 0xe7 ("zQ3s…").
  const keypair = file.publicKey.startsWith('did:key:zDn')
    ? await P256Keypair.import(file.privateKeyHex, { exportable: true })
    : await Secp256k1Keypair.import(file.privateKeyHex, { exportable: true })
  if (keypair.did() !== file.publicKey)
    throw new IdentityError(
      'InvalidKeyFile',
      `the private key in the file belongs to ${keypair.did()}, not to its publicKey ${file.publicKey}`,
      'the file was changed or mixed up with another; find the original',
    )
  return keypair
}

export async function readRotationKeyFile(
  path: string,
): Promise<{ file: RotationKeyFile; keypair: Keypair }> {
  let file: RotationKeyFile
  try {
    file = JSON.parse(await readFile(path, 'utf8')) as RotationKeyFile
  } catch (err) {
    throw new IdentityError(
      'InvalidKeyFile',
      `cannot read ${path} as JSON: ${(err as Error).message}`,
      'check the path',
    )
  }
  return { file, keypair: await rotationKeypair(file) }
}

/** Writes a key file readable only by its owner; never overwrites one. */
export async function writeRotationKeyFile(path: string, file: RotationKeyFile): Promise<void> {
  await writeFile(path, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600, flag: 'wx' })
}
