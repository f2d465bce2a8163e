import { readFile, writeFile } from 'node:fs/promises'
import { P256Keypair } from '@atproto/crypto'
import {
  generateTransferKey,
  jwkPrivateKeyBytes,
  jwkPublicKeyBytes,
  parseTransferPublicJwk,
  type TransferAlgorithm,
  type TransferPrivateJwk,
  type TransferPublicJwk,
} from '@pds-transfer/core'
import { ArchiveError } from './archive-error.ts'

/** `type` of an archive key file. */
export const ARCHIVE_KEY_TYPE = 'pds-transfer-archive-key'

/**
 * The keys of one archive. Objects are sealed to `encryption` (X25519, HPKE); manifests are
 * signed with `signing` (P-256). Who holds which part decides who can do what:
 * - the whole file (the operator's key): write, read, verify;
 * - without `encryption.d` (what a user gives a backup service): write and verify at rest, but
 *   never read what it wrote;
 * - reading needs `encryption.d`; checking at rest needs only `signing.did`.
 */
export interface ArchiveKeys {
  encryption: TransferPublicJwk & { d?: string }
  signing: {
    /** did:key of the manifest-signing key. */
    did: string
    /** hex of the P-256 private key; absent in a key that may only verify. */
    privateKey?: string
  }
}

/** A fresh key set (both private parts). */
export async function generateArchiveKeys(alg: TransferAlgorithm = 'HPKE-3'): Promise<ArchiveKeys> {
  const encryption: TransferPrivateJwk = generateTransferKey({
    alg,
    kid: `archive-${Date.now().toString(36)}`,
  })
  const signer = await P256Keypair.create({ exportable: true })
  return {
    encryption,
    signing: { did: signer.did(), privateKey: Buffer.from(await signer.export()).toString('hex') },
  }
}

/** The same keys without the decryption part: a writer that cannot read the archive. */
export function writerKeys(keys: ArchiveKeys): ArchiveKeys {
  const { d: _d, ...encryption } = keys.encryption
  return { encryption, signing: { ...keys.signing } }
}

/** Raw X25519 public key objects are sealed to. */
export function encryptionPublicKey(keys: ArchiveKeys): Uint8Array {
  return jwkPublicKeyBytes(keys.encryption)
}

/** Raw X25519 private key, or `InvalidKey` when these keys cannot decrypt. */
export function encryptionPrivateKey(keys: ArchiveKeys): Uint8Array {
  const { d } = keys.encryption
  if (!d)
    throw new ArchiveError(
      'InvalidKey',
      'this key file cannot decrypt the archive (it has no private encryption key "d")',
    )
  return jwkPrivateKeyBytes({ ...keys.encryption, d })
}

/** The manifest signer, or `InvalidKey` when these keys may only verify. */
export async function manifestSigner(keys: ArchiveKeys): Promise<P256Keypair> {
  if (!keys.signing.privateKey)
    throw new ArchiveError('InvalidKey', 'this key file cannot write backups (it has no private signing key)')
  const signer = await P256Keypair.import(keys.signing.privateKey)
  if (signer.did() !== keys.signing.did)
    throw new ArchiveError('InvalidKey', `the signing private key does not belong to ${keys.signing.did}`)
  return signer
}

/** Checks a parsed key file; throws `InvalidKey` naming the field at fault. */
export function parseArchiveKeys(value: unknown): ArchiveKeys {
  const file = value as { type?: unknown; version?: unknown; encryption?: unknown; signing?: unknown } | null
  if (typeof file !== 'object' || file === null || file.type !== ARCHIVE_KEY_TYPE || file.version !== 1)
    throw new ArchiveError(
      'InvalidKey',
      `not an archive key file (expected "type": "${ARCHIVE_KEY_TYPE}", "version": 1)`,
    )
  const enc = file.encryption as Record<string, unknown> | undefined
  if (typeof enc !== 'object' || enc === null)
    throw new ArchiveError('InvalidKey', 'key file has no "encryption" key')
  const { d, ...pub } = enc
  let encryption: ArchiveKeys['encryption']
  try {
    encryption = parseTransferPublicJwk(pub)
  } catch (err) {
    throw new ArchiveError('InvalidKey', `encryption key: ${(err as Error).message}`, { cause: err })
  }
  if (d !== undefined) {
    if (typeof d !== 'string') throw new ArchiveError('InvalidKey', 'encryption key: "d" must be a string')
    encryption = { ...encryption, d }
    encryptionPrivateKey({ encryption, signing: { did: '' } })
  }
  const signing = file.signing as { did?: unknown; privateKey?: unknown } | undefined
  if (typeof signing?.did !== 'string' || !signing.did.startsWith('did:key:'))
    throw new ArchiveError('InvalidKey', 'signing key: "did" must be a did:key')
  if (
    signing.privateKey !== undefined &&
    (typeof signing.privateKey !== 'string' || !/^[0-9a-f]{64}$/.test(signing.privateKey))
  )
    throw new ArchiveError('InvalidKey', 'signing key: "privateKey" must be 64 hex digits')
  return {
    encryption,
    signing: {
      did: signing.did,
      ...(signing.privateKey !== undefined && { privateKey: signing.privateKey as string }),
    },
  }
}

/** Reads a key file written by `writeArchiveKeys`. */
export async function readArchiveKeys(path: string): Promise<ArchiveKeys> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new ArchiveError('InvalidKey', `cannot read the key file ${path}: ${(err as Error).message}`, {
      cause: err,
    })
  }
  try {
    return parseArchiveKeys(JSON.parse(text))
  } catch (err) {
    if (err instanceof ArchiveError) throw err
    throw new ArchiveError('InvalidKey', `${path} is not JSON`, { cause: err })
  }
}

/** Writes a key file readable only by its owner (it may hold private keys). */
export async function writeArchiveKeys(path: string, keys: ArchiveKeys): Promise<void> {
  const file = { type: ARCHIVE_KEY_TYPE, version: 1, ...keys }
  await writeFile(path, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600, flag: 'wx' })
}
