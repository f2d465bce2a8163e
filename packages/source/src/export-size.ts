import { BLOBPACK_HEADER_LENGTH, blobpackEntryOverhead, type SizeHint } from '@pds-transfer/core'
import { CID } from 'multiformats/cid'
import type { AccountSource, RepoSnapshot, SourceBlobRef } from './account-source.ts'

/** A blob goes in a blobpack only if its entry fits one frame; larger ones are left to getBlob (D4). */
export function blobFitsFrame(ref: SourceBlobRef, maxFramePlaintext: number): boolean {
  return BLOBPACK_HEADER_LENGTH + blobEntryLength(ref) <= maxFramePlaintext
}

/** Bytes of a blob's blobpack entry: its CID, lengths and data. */
export function blobEntryLength(ref: SourceBlobRef): number {
  return blobpackEntryOverhead(CID.parse(ref.cid).bytes.length) + ref.size
}

/**
 * What the stream `exportFrames` is about to send will carry, for the `size-hint` extension:
 * the CAR (unless skipped) and every blobpack entry, walking the same listing with the same
 * rules. One pass over the blob index, no blob is opened.
 */
export async function exportSize(options: {
  source: AccountSource
  did: string
  snapshot: RepoSnapshot
  maxFramePlaintext: number
  skipRepo?: boolean
  blobCursor?: string
}): Promise<SizeHint> {
  const hint: SizeHint = { bytes: options.skipRepo ? 0 : options.snapshot.carLength, blobs: 0 }
  let cursor = options.blobCursor
  do {
    const page = await options.source.listBlobs(options.did, {
      limit: 500,
      ...(cursor !== undefined && { cursor }),
    })
    for (const ref of page.blobs) {
      if (!blobFitsFrame(ref, options.maxFramePlaintext)) continue
      hint.bytes += blobEntryLength(ref)
      hint.blobs++
    }
    cursor = page.cursor
  } while (cursor !== undefined)
  return hint
}
