/**
 * One account's backups in a store: sealed objects plus a signed chain of manifests. Invariant:
 * an object is written before the manifest that names it, and a run is part of the archive only
 * once its manifest is stored; so a run cut short (a crash, a full disk) leaves at most objects
 * no manifest names (`verify` lists them as strays), never a manifest naming what is not there.
 */
import { createHash } from 'node:crypto'
import { type AccountState, CONTENT_TYPE, decodeAccountState, encodeAccountState } from '@pds-transfer/core'
import { CID } from 'multiformats/cid'
import { ArchiveError } from './archive-error.ts'
import { type ArchiveKeys, encryptionPrivateKey, manifestSigner } from './archive-keys.ts'
import type { ArchiveStore } from './archive-store.ts'
import {
  type BackupManifest,
  type BlobEntry,
  decodeManifest,
  encodeManifest,
  MANIFEST_VERSION,
  type ObjectRef,
  type UnsignedManifest,
} from './backup-manifest.ts'
import { openObject, sealObject } from './sealed-object.ts'

/** Content types of the objects (and so of their frames). */
export const OBJECT_TYPE = {
  repo: 'application/vnd.ipld.car',
  blob: 'application/octet-stream',
  preferences: 'application/json',
  /** The transfer's private-state encoding (@pds-transfer/core `encodeAccountState`). */
  accountState: CONTENT_TYPE.accountState,
} as const

/** The archive of one account as its verified manifests describe it. */
export interface ArchiveState {
  /** Every manifest, oldest first, each signed by the archive's key and chained to the one before. */
  manifests: BackupManifest[]
  latest: BackupManifest | undefined
  /** Every blob held, over the whole chain, by CID. */
  blobs: Map<string, BlobEntry>
}

/** What `verify` found. */
export interface VerifyReport {
  manifests: number
  /** Objects checked (each once, however many manifests name it). */
  objects: number
  /** Stored bytes read. */
  bytes: number
  /** True when every object was also decrypted and its contents checked. */
  deep: boolean
  /** Each change, loss or stray found, in words; empty when the archive is intact. */
  problems: string[]
}

export class AccountArchive {
  constructor(
    readonly store: ArchiveStore,
    readonly keys: ArchiveKeys,
    readonly did: string,
  ) {}

  static manifestKey(did: string, seq: number): string {
    return `${did}/manifests/${String(seq).padStart(12, '0')}`
  }
  static repoKey(did: string, rev: string): string {
    return `${did}/repo/${rev}.car`
  }
  static blobKey(did: string, cid: string): string {
    return `${did}/blobs/${cid}`
  }
  static preferencesKey(did: string, seq: number): string {
    return `${did}/preferences/${String(seq).padStart(12, '0')}.json`
  }
  static accountStateKey(did: string, seq: number): string {
    return `${did}/account-state/${String(seq).padStart(12, '0')}.cbor`
  }

  /** Reads and checks every manifest; throws `ManifestInvalid` at the first that fails. */
  async load(): Promise<ArchiveState> {
    const manifests: BackupManifest[] = []
    const blobs = new Map<string, BlobEntry>()
    let prev: string | null = null
    for await (const key of this.store.list(`${this.did}/manifests/`)) {
      const bytes = await this.readAll(key)
      const manifest = await decodeManifest(bytes, key, this.keys.signing.did)
      const seq = manifests.length
      if (
        manifest.did !== this.did ||
        manifest.seq !== seq ||
        key !== AccountArchive.manifestKey(this.did, seq)
      )
        throw new ArchiveError('ManifestInvalid', `${key}: expected manifest ${seq} of ${this.did}`)
      if (manifest.prev !== prev)
        throw new ArchiveError(
          'ManifestInvalid',
          `${key}: does not follow manifest ${seq - 1} (a manifest was changed, dropped or reordered)`,
        )
      for (const blob of manifest.blobs) blobs.set(blob.cid, blob)
      manifests.push(manifest)
      prev = createHash('sha256').update(bytes).digest('hex')
    }
    return { manifests, latest: manifests.at(-1), blobs }
  }

  /** Seals and stores the repo's full CAR at `rev`. */
  writeRepo(rev: string, car: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<ObjectRef> {
    return this.write(AccountArchive.repoKey(this.did, rev), OBJECT_TYPE.repo, true, car)
  }

  /** Seals and stores a blob (the caller has checked its bytes against the CID). */
  writeBlob(cid: string, bytes: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<ObjectRef> {
    return this.write(AccountArchive.blobKey(this.did, cid), OBJECT_TYPE.blob, false, bytes)
  }

  writePreferences(seq: number, preferences: unknown[]): Promise<ObjectRef> {
    const json = Buffer.from(JSON.stringify({ preferences }))
    return this.write(AccountArchive.preferencesKey(this.did, seq), OBJECT_TYPE.preferences, true, [json])
  }

  /** The account's private state the PDS shared (its email), as a transfer carries it. */
  writeAccountState(seq: number, state: AccountState): Promise<ObjectRef> {
    return this.write(AccountArchive.accountStateKey(this.did, seq), OBJECT_TYPE.accountState, false, [
      encodeAccountState(state),
    ])
  }

  /** Signs and stores the manifest that makes a run part of the archive. */
  async appendManifest(
    state: ArchiveState,
    run: Omit<UnsignedManifest, 'version' | 'did' | 'seq' | 'prev'>,
  ): Promise<BackupManifest> {
    const seq = state.manifests.length
    const prevKey = state.latest && AccountArchive.manifestKey(this.did, state.latest.seq)
    const prev = prevKey
      ? createHash('sha256')
          .update(await this.readAll(prevKey))
          .digest('hex')
      : null
    const { manifest, bytes } = await encodeManifest(
      { version: MANIFEST_VERSION, did: this.did, seq, prev, ...run },
      await manifestSigner(this.keys),
    )
    await this.store.put(AccountArchive.manifestKey(this.did, seq), [bytes])
    return manifest
  }

  /**
   * The plaintext of an object a manifest names. The stored bytes are checked against the
   * manifest's SHA-256 and every frame against its tag; chunks are provisional until the
   * iteration ends normally (see `openObject`).
   */
  async *read(ref: ObjectRef, contentType: string): AsyncGenerator<Uint8Array> {
    const stored = await this.store.get(ref.key)
    if (!stored) throw new ArchiveError('ObjectMissing', `${ref.key} is not in the store`)
    const digest = createHash('sha256')
    let size = 0
    async function* hashed(): AsyncGenerator<Uint8Array> {
      for await (const chunk of stored as AsyncIterable<Uint8Array>) {
        digest.update(chunk)
        size += chunk.length
        yield chunk
      }
    }
    yield* openObject(this.keys, { did: this.did, key: ref.key, contentType }, hashed())
    if (size !== ref.size || digest.digest('hex') !== ref.sha256)
      throw new ArchiveError(
        'ObjectCorrupt',
        `${ref.key}: the stored bytes differ from what the manifest recorded`,
      )
  }

  /** The preferences array of a run. */
  async readPreferences(ref: ObjectRef): Promise<unknown[]> {
    const parts: Uint8Array[] = []
    for await (const chunk of this.read(ref, OBJECT_TYPE.preferences)) parts.push(chunk)
    const value = JSON.parse(Buffer.concat(parts).toString('utf8')) as { preferences?: unknown }
    if (!Array.isArray(value.preferences))
      throw new ArchiveError('ObjectCorrupt', `${ref.key}: no preferences array`)
    return value.preferences
  }

  async readAccountState(ref: ObjectRef): Promise<AccountState> {
    const parts: Uint8Array[] = []
    for await (const chunk of this.read(ref, OBJECT_TYPE.accountState)) parts.push(chunk)
    try {
      return decodeAccountState(Buffer.concat(parts)).state
    } catch (err) {
      throw new ArchiveError('ObjectCorrupt', `${ref.key}: ${(err as Error).message}`, { cause: err })
    }
  }

  /**
   * Checks the archive at rest: the manifest chain, and every object it names against its
   * recorded size and SHA-256 (needs only the signing did:key). With `deep`, also decrypts each
   * object and checks each blob against its CID (needs the private encryption key). Objects no
   * manifest names are reported as strays (a run that did not finish).
   */
  async verify(options: { deep?: boolean } = {}): Promise<VerifyReport> {
    if (options.deep) encryptionPrivateKey(this.keys) // `InvalidKey` before any work, not once per object
    const report: VerifyReport = {
      manifests: 0,
      objects: 0,
      bytes: 0,
      deep: options.deep === true,
      problems: [],
    }
    let state: ArchiveState
    try {
      state = await this.load()
    } catch (err) {
      report.problems.push((err as Error).message)
      return report
    }
    report.manifests = state.manifests.length
    const named = new Map<string, { ref: ObjectRef; type: string; cid?: string }>()
    for (const m of state.manifests) {
      named.set(m.repo.object.key, { ref: m.repo.object, type: OBJECT_TYPE.repo })
      if (m.preferences) named.set(m.preferences.key, { ref: m.preferences, type: OBJECT_TYPE.preferences })
      if (m.accountState)
        named.set(m.accountState.key, { ref: m.accountState, type: OBJECT_TYPE.accountState })
      for (const b of m.blobs) named.set(b.object.key, { ref: b.object, type: OBJECT_TYPE.blob, cid: b.cid })
    }
    for (const { ref, type, cid } of named.values()) {
      report.objects++
      try {
        if (options.deep) await this.checkContents(ref, type, cid)
        else await this.checkStored(ref)
        report.bytes += ref.size
      } catch (err) {
        report.problems.push((err as Error).message)
      }
    }
    for await (const key of this.store.list(`${this.did}/`)) {
      if (!key.startsWith(`${this.did}/manifests/`) && !named.has(key))
        report.problems.push(`${key}: stray object no manifest names (a backup run that did not finish)`)
    }
    return report
  }

  private async checkStored(ref: ObjectRef): Promise<void> {
    const stored = await this.store.get(ref.key)
    if (!stored) throw new ArchiveError('ObjectMissing', `${ref.key} is not in the store`)
    const digest = createHash('sha256')
    let size = 0
    for await (const chunk of stored) {
      digest.update(chunk)
      size += chunk.length
    }
    if (size !== ref.size || digest.digest('hex') !== ref.sha256)
      throw new ArchiveError(
        'ObjectCorrupt',
        `${ref.key}: the stored bytes differ from what the manifest recorded`,
      )
  }

  private async checkContents(ref: ObjectRef, type: string, cid?: string): Promise<void> {
    const digest = createHash('sha256')
    let size = 0
    for await (const chunk of this.read(ref, type)) {
      digest.update(chunk)
      size += chunk.length
    }
    if (size !== ref.plainSize)
      throw new ArchiveError(
        'ObjectCorrupt',
        `${ref.key}: holds ${size} bytes, the manifest says ${ref.plainSize}`,
      )
    if (cid && !Buffer.from(CID.parse(cid).multihash.digest).equals(digest.digest()))
      throw new ArchiveError('ObjectCorrupt', `${ref.key}: the blob does not hash to its CID`)
  }

  private async write(
    key: string,
    contentType: string,
    compress: boolean,
    plaintext: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  ): Promise<ObjectRef> {
    let plainSize = 0
    async function* counted(): AsyncGenerator<Uint8Array> {
      for await (const chunk of plaintext) {
        plainSize += chunk.length
        yield chunk
      }
    }
    const stored = await this.store.put(
      key,
      sealObject(this.keys, { did: this.did, key, contentType, compress }, counted()),
    )
    return { key, ...stored, plainSize }
  }

  private async readAll(key: string): Promise<Uint8Array> {
    const stored = await this.store.get(key)
    if (!stored) throw new ArchiveError('ObjectMissing', `${key} is not in the store`)
    const parts: Uint8Array[] = []
    for await (const chunk of stored) parts.push(chunk)
    return Buffer.concat(parts)
  }
}
