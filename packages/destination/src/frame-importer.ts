import {
  CONTENT_TYPE,
  CONTENT_TYPE_ORDER,
  type DecodedFrame,
  decodeAccountState,
  decodeEndManifest,
  type EndManifest,
  parsePreferences,
  readBlobpack,
  stageFrame,
  WireError,
  withoutCredentials,
} from '@pds-transfer/core'
import type { AccountSink, BlobUpload } from './account-sink.ts'
import { consumeFrame } from './frame-unit.ts'
import { ImportFailure } from './import-failure.ts'
import type { FailureReason } from './inbound-transfer.ts'
import type { VerifiedRepo } from './repo-verifier.ts'
import { importStagedRepo } from './staged-repo-import.ts'

/** Largest preferences or private-state frame we accept (they are small JSON / CBOR documents). */
const MAX_DOCUMENT_FRAME = 16 * 1024 * 1024

export interface FrameImporterOptions {
  sink: AccountSink
  did: string
  /** The DID document's repo signing key (`did:key`). */
  signingKey: string
  maxBlobSize: number
  /** The source confirmed the end-manifest extension: the stream must end with a matching manifest. */
  expectManifest: boolean
  /**
   * A resumed export (extension `resume`): the repo already verified and committed here. The
   * stream may then skip the CAR (the source's head has not moved) or bring a newer one.
   */
  previousRepo?: VerifiedRepo
  /**
   * Extension repo-diff was asked for: a repo CAR may hold only the blocks written since
   * `previousRepo`, verified over the account's committed repo (`AccountSink.openRepoBlocks`).
   */
  diffOverPrevious?: boolean
  /** Called after each committed unit. */
  onProgress(delta: ImportProgress): Promise<void>
}

/** What one committed unit added. */
export interface ImportProgress {
  frames?: number
  bytes?: number
  blobs?: number
  /** Records in the repo now committed (absolute). */
  records?: number
  /** The repo just verified and committed. */
  repo?: VerifiedRepo
  /** Last blob CID of the blobpack just committed (the resume cursor). */
  blobCursor?: string
}

/**
 * Imports the frames of one export stream, each as a unit: nothing of a frame reaches the
 * account unless its AEAD tag and its content verified. The repo CAR is staged block by
 * block (each block hash-checked), verified, then committed; blobs are committed once their
 * CID and their frame's tag have verified; preferences and private state are validated whole.
 */
export class FrameImporter {
  private position = -1
  private repo: VerifiedRepo | undefined
  private manifest: EndManifest | undefined
  /** What arrived, to hold against the manifest. */
  private readonly received = { frames: 0, bytes: 0, blobs: 0 }

  constructor(private readonly options: FrameImporterOptions) {
    this.previous = options.previousRepo
  }

  /** The repo a resumed stream builds on, until the stream brings its own. */
  private readonly previous: VerifiedRepo | undefined

  /** The end manifest, once received and checked. */
  get endManifest(): EndManifest | undefined {
    return this.manifest
  }

  async import(frame: DecodedFrame): Promise<void> {
    this.checkOrder(frame.contentType)
    switch (frame.contentType) {
      case CONTENT_TYPE.repoCar:
        await this.importRepo(frame)
        break
      case CONTENT_TYPE.blobpack:
        await this.importBlobpack(frame)
        break
      case CONTENT_TYPE.preferences:
        await this.importDocument(frame, 'PreferencesInvalid', async (bytes) => {
          await this.options.sink.putPreferences(this.options.did, parsePreferences(bytes))
        })
        break
      case CONTENT_TYPE.accountState:
        await this.importDocument(frame, 'AccountStateInvalid', async (bytes) => {
          const { state } = decodeAccountState(bytes)
          await this.options.sink.putAccountState(this.options.did, withoutCredentials(state))
        })
        break
      case CONTENT_TYPE.endManifest:
        await this.checkManifest(frame)
        await this.options.onProgress({ frames: 1, bytes: frame.plaintextLength })
        break
    }
    this.received.frames++
    this.received.bytes += frame.plaintextLength
  }

  private async checkManifest(frame: DecodedFrame): Promise<void> {
    if (!this.options.expectManifest) {
      throw new ImportFailure('StreamInvalid', 'end manifest in a stream that did not negotiate it')
    }
    const bytes = await readSmallFrame(frame, 'StreamInvalid')
    let manifest: EndManifest
    try {
      manifest = decodeEndManifest(bytes)
    } catch (err) {
      if (err instanceof WireError) throw new ImportFailure('StreamInvalid', err.message, { cause: err })
      throw err
    }
    const repo = (this.repo ?? this.previous) as VerifiedRepo
    const mismatches = [
      ['frames', manifest.frames, this.received.frames],
      ['plaintext bytes', manifest.bytes, this.received.bytes],
      ['blobs', manifest.blobs, this.received.blobs],
      ['repo rev', manifest.repoRev, repo.rev],
      ['repo commit', manifest.repoCommit, repo.commitCid],
    ].filter(([, sent, got]) => sent !== got)
    if (mismatches.length > 0) {
      const list = mismatches.map(([what, sent, got]) => `${what}: sent ${sent}, received ${got}`)
      throw new ImportFailure('StreamInvalid', `end manifest does not match the stream (${list.join('; ')})`)
    }
    this.manifest = manifest
  }

  private checkOrder(contentType: string): void {
    const index = CONTENT_TYPE_ORDER.indexOf(contentType)
    if (index < 0)
      throw new ImportFailure('StreamInvalid', `unknown content type ${JSON.stringify(contentType)}`)
    const repeatable = contentType === CONTENT_TYPE.blobpack
    if (index < this.position || (index === this.position && !repeatable)) {
      throw new ImportFailure('StreamInvalid', `${contentType} frame out of order`)
    }
    if (index > 0 && !this.repo && !this.previous)
      throw new ImportFailure('StreamInvalid', 'the stream must start with the repo CAR')
    this.position = index
  }

  private async importRepo(frame: DecodedFrame): Promise<void> {
    const { sink, did, signingKey } = this.options
    const repo = await importStagedRepo({
      sink,
      did,
      signingKey,
      overHeld: this.options.diffOverPrevious === true && this.previous !== undefined,
      // consumeFrame returns once the whole frame was read and its tag verified.
      fill: (stageCar) => consumeFrame(frame, stageCar),
    })
    this.repo = repo
    await this.options.onProgress({ frames: 1, bytes: frame.plaintextLength, records: repo.records, repo })
  }

  private async importBlobpack(frame: DecodedFrame): Promise<void> {
    const { sink, did, maxBlobSize } = this.options
    const pending: BlobUpload[] = []
    try {
      const summary = await consumeFrame(frame, (plaintext) =>
        readBlobpack(plaintext, {
          maxBlobSize,
          onBlob: async (entry) => {
            const cid = entry.cid.toString()
            if (entry.duplicate || (await sink.hasBlob(did, cid))) return discardSink
            const upload = await sink.startBlob(did, cid, entry.size)
            return {
              write: (chunk) => upload.write(chunk),
              end: () => {
                pending.push(upload)
              },
              abort: () => upload.abort(),
            }
          },
        }),
      )
      // readBlobpack consumed the whole frame, so its tag verified: the blobs are authentic.
      // Committed together: one by one, each blob's close and rename waited for the last one's.
      const results = await Promise.allSettled(pending.map((upload) => upload.commit()))
      // What committed is stored; what did not is aborted below (its temp file removed).
      const failed = results.findIndex((r) => r.status === 'rejected')
      const uncommitted = pending.filter((_, i) => results[i]?.status === 'rejected')
      pending.length = 0
      pending.push(...uncommitted)
      if (failed >= 0) throw (results[failed] as PromiseRejectedResult).reason
      this.received.blobs += summary.entries
      const last = summary.cids.at(-1)
      await this.options.onProgress({
        frames: 1,
        bytes: frame.plaintextLength,
        blobs: summary.uniqueBlobs,
        ...(last && { blobCursor: last.toString() }),
      })
    } catch (err) {
      await Promise.allSettled(pending.map((u) => u.abort()))
      if (err instanceof WireError && err.reason.startsWith('Blobpack')) {
        throw new ImportFailure('BlobInvalid', err.message, { cause: err })
      }
      throw err
    }
  }

  private async importDocument(
    frame: DecodedFrame,
    reason: 'PreferencesInvalid' | 'AccountStateInvalid',
    apply: (bytes: Uint8Array) => Promise<void>,
  ): Promise<void> {
    const bytes = await readSmallFrame(frame, reason)
    try {
      await apply(bytes)
    } catch (err) {
      if (err instanceof WireError) throw new ImportFailure(reason, err.message, { cause: err })
      throw err
    }
    await this.options.onProgress({ frames: 1, bytes: frame.plaintextLength })
  }
}

const discardSink = { write() {}, end() {}, abort() {} }

/** A whole small frame (a document), read and tag-checked before anything looks at it. */
async function readSmallFrame(frame: DecodedFrame, reason: FailureReason): Promise<Uint8Array> {
  if (frame.plaintextLength > MAX_DOCUMENT_FRAME) {
    throw new ImportFailure(
      reason,
      `${frame.contentType} frame of ${frame.plaintextLength} bytes is too large`,
    )
  }
  const staged = await stageFrame(frame, { memoryLimit: MAX_DOCUMENT_FRAME })
  const chunks: Uint8Array[] = []
  for await (const chunk of staged.open()) chunks.push(chunk)
  await staged.dispose()
  return Buffer.concat(chunks)
}
