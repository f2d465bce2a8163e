/**
 * Where an archive's objects live: a flat namespace of keys (`<did>/blobs/<cid>`, ...) holding
 * immutable byte strings. A `put` is atomic (an object is whole or absent, never half-written)
 * and reports the SHA-256 of what it stored, which the manifests record so that any change at
 * rest is found. Implementations: `FsArchiveStore`; an object store plugs in here.
 */
export interface ArchiveStore {
  /** Stores `bytes` under `key`, replacing what was there, and returns what was stored. */
  put(key: string, bytes: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<StoredObject>
  /** The object's bytes, or undefined if there is none. */
  get(key: string): Promise<AsyncIterable<Uint8Array> | undefined>
  has(key: string): Promise<boolean>
  /** Keys starting with `prefix`, in byte order. */
  list(prefix: string): AsyncIterable<string>
  delete(key: string): Promise<void>
}

/** What a store holds under one key. */
export interface StoredObject {
  /** Stored (sealed) bytes. */
  size: number
  /** SHA-256 of the stored bytes, lowercase hex. */
  sha256: string
}

/** Object keys are `/`-separated segments of `[A-Za-z0-9._:%-]`, none empty or only dots. */
const SEGMENT = /^[A-Za-z0-9._:%-]+$/

/** True if `key` can name an object in every store (no traversal, no odd characters). */
export function isObjectKey(key: string): boolean {
  if (key.length === 0 || key.length > 512) return false
  return key.split('/').every((s) => SEGMENT.test(s) && !/^\.+$/.test(s))
}
