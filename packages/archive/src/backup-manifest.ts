/**
 * The manifest of one backup run: what the archive holds for an account after it, signed by
 * the archive's signing key and chained to the run before (`prev` is the SHA-256 of the
 * previous manifest's stored bytes), so that a changed, dropped or reordered manifest, and any
 * object whose stored bytes changed, is found without decrypting anything (spec/archive-format.md).
 * Encoded as DAG-CBOR; the signature covers the encoding of every other field, as a repo
 * commit's does.
 */
import { verifySignature } from '@atproto/crypto'
import { decode, encode } from '@atproto/lex-cbor'
import { ArchiveError } from './archive-error.ts'
import type { StoredObject } from './archive-store.ts'

export const MANIFEST_VERSION = 1

/** An object of the store, as the manifest pins it. */
export interface ObjectRef extends StoredObject {
  key: string
  /** Bytes before sealing (and compression). */
  plainSize: number
}

/** The account's repo as of a run. */
export interface RepoEntry {
  rev: string
  commitCid: string
  records: number
  /** did:key the commit was verified with when it was backed up. */
  signingKey: string
  /**
   * `full`: the object is the repo's whole CAR. `diff`: only the blocks written after `since`
   * (what `getRepo?since=` returned), verified over the repo of the run before; the repo is then
   * the union of the chain back to the last `full` (spec/archive-format.md).
   */
  kind: 'full' | 'diff'
  since: string | null
  object: ObjectRef
}

export interface BlobEntry {
  cid: string
  object: ObjectRef
}

/** A blob the repo references that the PDS could not serve. */
export interface MissingBlob {
  cid: string
  reason: string
}

export interface BackupManifest {
  version: typeof MANIFEST_VERSION
  did: string
  /** 0 for the first run, then one more per run. */
  seq: number
  /** SHA-256 (hex) of the previous manifest's stored bytes; null for seq 0. */
  prev: string | null
  createdAt: string
  /** The PDS the account was read from. */
  source: string
  /** The repo after this run (the same entry as the run before when the head did not move). */
  repo: RepoEntry
  /** Blobs stored by this run; the account's blobs are those of every manifest of the chain. */
  blobs: BlobEntry[]
  /** Blobs held after this run, over the whole chain. */
  blobCount: number
  /** Blobs the repo at `repo.rev` references and the archive does not hold. */
  missingBlobs: MissingBlob[]
  /** The account's preferences (needs the user's grant); null when not backed up. */
  preferences: ObjectRef | null
  /** The account's private state its PDS shared (the email; needs the user's grant); null when not backed up. */
  accountState: ObjectRef | null
  /** did:key of the key that signed this manifest. */
  signer: string
  sig: Uint8Array
}

export type UnsignedManifest = Omit<BackupManifest, 'signer' | 'sig'>

/** Signs and encodes a manifest. */
export async function encodeManifest(
  manifest: UnsignedManifest,
  signer: { did(): string; sign(bytes: Uint8Array): Promise<Uint8Array> },
): Promise<{ manifest: BackupManifest; bytes: Uint8Array }> {
  const unsigned = { ...manifest, signer: signer.did() }
  const sig = await signer.sign(encode(unsigned as never))
  const signed: BackupManifest = { ...unsigned, sig }
  return { manifest: signed, bytes: encode(signed as never) }
}

/**
 * Decodes a manifest and checks its signature against `signer` (the archive's own did:key, from
 * the key file: never the one the manifest names, which whoever forged it would name too).
 */
export async function decodeManifest(
  bytes: Uint8Array,
  key: string,
  signer: string,
): Promise<BackupManifest> {
  let value: Record<string, unknown>
  try {
    value = decode(bytes) as Record<string, unknown>
  } catch (err) {
    throw new ArchiveError('ManifestInvalid', `${key}: not DAG-CBOR`, { cause: err })
  }
  if (typeof value !== 'object' || value === null || value.version !== MANIFEST_VERSION)
    throw new ArchiveError('ManifestInvalid', `${key}: not a version ${MANIFEST_VERSION} manifest`)
  const { sig, ...unsigned } = value
  if (!(sig instanceof Uint8Array)) throw new ArchiveError('ManifestInvalid', `${key}: no signature`)
  if (unsigned.signer !== signer)
    throw new ArchiveError(
      'ManifestInvalid',
      `${key}: signed by ${String(unsigned.signer)}, not by this archive's key ${signer}`,
    )
  const valid = await verifySignature(signer, encode(unsigned as never), sig).catch(() => false)
  if (!valid)
    throw new ArchiveError(
      'ManifestInvalid',
      `${key}: the signature does not verify: the manifest was changed`,
    )
  return value as unknown as BackupManifest
}
