import {
  BLOBPACK_HEADER_LENGTH,
  type BlobpackSourceEntry,
  CONTENT_TYPE,
  encodeAccountState,
  encodeBlobpack,
  encodeEndManifest,
  encodePreferences,
  type FrameEncoder,
  MAX_FRAME_PLAINTEXT,
  TransferError,
  WireError,
  withoutCredentials,
} from '@pds-transfer/core'
import { CID } from 'multiformats/cid'
import type { AccountSource, RepoSnapshot, SourceBlobRef } from './account-source.ts'
import { blobEntryLength, blobFitsFrame } from './export-size.ts'

export interface ExportProgress {
  frames: number
  bytes: number
  blobs: number
}

export interface ExportFramesOptions {
  source: AccountSource
  did: string
  snapshot: RepoSnapshot
  encoder: FrameEncoder
  /** A blobpack frame is closed once it would exceed this many bytes (default 32 MiB). */
  blobpackTarget?: number
  /** Largest plaintext of one frame (default: the uint32 limit); blobs that cannot fit are left to getBlob. */
  maxFramePlaintext?: number
  /** Called after each frame is fully written. */
  onProgress?: (progress: ExportProgress) => void
  /** End with the authenticated manifest frame (extension `end-manifest`). */
  endManifest?: boolean
  /** Extension `resume`: the destination already holds this repo snapshot; omit the CAR frame. */
  skipRepo?: boolean
  /** Extension `resume`: continue the blob listing after this CID. */
  blobCursor?: string
}

const BLOB_PAGE = 500

/**
 * The body of an exportAccount response: repo CAR, blobpacks, preferences,
 * private state, in that order, empty kinds omitted (section 2.1). Pulls from
 * the account source only as fast as the consumer reads.
 */
export async function* exportFrames(options: ExportFramesOptions): AsyncGenerator<Uint8Array> {
  const { source, did, snapshot, encoder } = options
  const maxFrame = options.maxFramePlaintext ?? MAX_FRAME_PLAINTEXT
  const target = Math.min(options.blobpackTarget ?? 32 * 1024 * 1024, maxFrame)
  const progress: ExportProgress = { frames: 0, bytes: 0, blobs: 0 }
  let plaintextBytes = 0
  const deferred: string[] = []

  async function* frame(
    type: string,
    data: AsyncIterable<Uint8Array> | Uint8Array,
    length: number,
    blobs = 0,
  ) {
    for await (const chunk of encoder.encodeFrame(type, data, length)) {
      progress.bytes += chunk.length
      yield chunk
    }
    progress.frames++
    progress.blobs += blobs
    plaintextBytes += length
    options.onProgress?.({ ...progress })
  }

  if (!options.skipRepo) {
    if (snapshot.carLength > maxFrame) {
      throw new TransferError('ExportFailed', `repo CAR of ${snapshot.carLength} bytes exceeds one frame`)
    }
    yield* frame(CONTENT_TYPE.repoCar, snapshot.open(), snapshot.carLength)
  }

  let pack: SourceBlobRef[] = []
  let packLength = BLOBPACK_HEADER_LENGTH
  // A pack's length is on the wire before its blobs are read, so a blob this PDS has lost (a
  // file gone from its disk) is found out first and left to getBlob, where the destination
  // reports it missing, instead of failing every export of the account.
  async function* flush() {
    const present: BlobpackSourceEntry[] = []
    let length = BLOBPACK_HEADER_LENGTH
    for (const ref of pack) {
      if (await blobReadable(source, did, ref.cid)) {
        present.push(blobEntry(source, did, ref))
        length += blobEntryLength(ref)
      } else deferred.push(ref.cid)
    }
    if (present.length > 0)
      yield* frame(CONTENT_TYPE.blobpack, encodeBlobpack(present), length, present.length)
  }
  let cursor = options.blobCursor
  do {
    const page = await source.listBlobs(did, { limit: BLOB_PAGE, ...(cursor !== undefined && { cursor }) })
    for (const ref of page.blobs) {
      if (!blobFitsFrame(ref, maxFrame)) {
        // Too large for any frame: left for the destination's getBlob reconciliation.
        deferred.push(ref.cid)
        continue
      }
      const entryLength = blobEntryLength(ref)
      if (pack.length > 0 && packLength + entryLength > target) {
        yield* flush()
        pack = []
        packLength = BLOBPACK_HEADER_LENGTH
      }
      pack.push(ref)
      packLength += entryLength
    }
    cursor = page.cursor
  } while (cursor !== undefined)
  if (pack.length > 0) yield* flush()

  const preferences = await source.getPreferences(did)
  if (preferences.length > 0) {
    // Validated here so that bad stored preferences fail the export, not the destination's import.
    const json = validated(() => encodePreferences(preferences))
    yield* frame(CONTENT_TYPE.preferences, json, json.length)
  }

  const state = withoutCredentials(await source.getAccountState(did))
  const stateBytes = validated(() => encodeAccountState(state))
  if (stateBytes.length > 1) yield* frame(CONTENT_TYPE.accountState, stateBytes, stateBytes.length)

  if (options.endManifest) {
    const manifest = encodeEndManifest({
      frames: progress.frames,
      bytes: plaintextBytes,
      blobs: progress.blobs,
      repoRev: snapshot.rev,
      repoCommit: snapshot.commitCid,
      deferredBlobs: deferred,
    })
    yield* frame(CONTENT_TYPE.endManifest, manifest, manifest.length)
  }
}

/** A stored document that does not encode is the source's fault: ExportFailed, with the reason. */
function validated(encode: () => Uint8Array): Uint8Array {
  try {
    return encode()
  } catch (err) {
    if (err instanceof WireError) throw new TransferError('ExportFailed', err.message, { cause: err })
    throw err
  }
}

/** Whether the blob can be read now (`hasBlob`, or a probe whose stream is closed unread). */
async function blobReadable(source: AccountSource, did: string, cid: string): Promise<boolean> {
  if (source.hasBlob) return source.hasBlob(did, cid)
  const stream = await source.openBlob(did, cid)
  if (!stream) return false
  // A Node stream is closed by destroy (an unstarted async iterator's return() would not run
  // the stream's cleanup, and its file would stay open until garbage collection).
  const closable = stream as { destroy?: () => void }
  if (typeof closable.destroy === 'function') closable.destroy()
  else await stream[Symbol.asyncIterator]().return?.()
  return true
}

function blobEntry(source: AccountSource, did: string, ref: SourceBlobRef): BlobpackSourceEntry {
  return {
    cid: CID.parse(ref.cid),
    size: ref.size,
    async open() {
      const stream = await source.openBlob(did, ref.cid)
      // The pack's length is already on the wire: a blob that vanished cannot be skipped, only failed.
      if (!stream) throw new TransferError('ExportFailed', `blob ${ref.cid} disappeared during export`)
      return stream
    },
  }
}
