import { decode, encode } from 'cborg'
import { WireError } from './errors.ts'

/**
 * The last frame of a stream with the `end-manifest` extension. Because it is an AEAD frame
 * like the others (its number and content type are in the AAD), a stream cut at any frame
 * boundary lacks it, and its counts let the destination check it received everything sent.
 */
export interface EndManifest {
  /** Frames sent before the manifest; equals the manifest's own frame number. */
  frames: number
  /** Plaintext bytes of those frames. */
  bytes: number
  /** Blobs sent in blobpack frames (each CID counted once). */
  blobs: number
  /** Rev and CID of the exported commit. */
  repoRev: string
  repoCommit: string
  /** Blobs too large for any frame, left for the destination to fetch with getBlob. */
  deferredBlobs: string[]
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0

/** Deterministic CBOR of the manifest. */
export function encodeEndManifest(manifest: EndManifest): Uint8Array {
  return encode({ ...manifest })
}

/** Decodes a manifest frame; unknown fields are ignored so later versions can add some. */
export function decodeEndManifest(bytes: Uint8Array): EndManifest {
  let value: unknown
  try {
    value = decode(bytes, { rejectDuplicateMapKeys: true, allowIndefinite: false, allowUndefined: false })
  } catch (err) {
    throw new WireError('InvalidEndManifest', `not valid CBOR: ${(err as Error).message}`, { cause: err })
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Uint8Array) {
    throw new WireError('InvalidEndManifest', 'the manifest must be a CBOR map')
  }
  const m = value as Record<string, unknown>
  for (const field of ['frames', 'bytes', 'blobs'] as const) {
    if (!isCount(m[field]))
      throw new WireError('InvalidEndManifest', `${field} must be a non-negative integer`)
  }
  if (typeof m.repoRev !== 'string' || typeof m.repoCommit !== 'string') {
    throw new WireError('InvalidEndManifest', 'repoRev and repoCommit must be text strings')
  }
  if (!Array.isArray(m.deferredBlobs) || !m.deferredBlobs.every((c) => typeof c === 'string')) {
    throw new WireError('InvalidEndManifest', 'deferredBlobs must be an array of CID strings')
  }
  return {
    frames: m.frames as number,
    bytes: m.bytes as number,
    blobs: m.blobs as number,
    repoRev: m.repoRev,
    repoCommit: m.repoCommit,
    deferredBlobs: m.deferredBlobs as string[],
  }
}
