import { type FileHandle, mkdir, open, rename, rm } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Cid } from '@atproto/lex-data'
import type { DiskBlobStore } from '@atproto/pds'
import { unfinishedName } from '@pds-transfer/destination'
import type { WriteBudget } from './write-budget.ts'

/** Prefix of our temporary files in the blob store's temporary directory, before `<pid>-<uuid>`. */
export const TRANSFER_TMP = 'transfer-'

/**
 * One blob written into the reference PDS's disk blob store: streamed into a file of its
 * temporary directory, then renamed to its permanent path once verified. The store's own
 * `putTemp` + `makePermanent` make both directories for every blob and read the whole
 * temporary file back into memory to write it again. Chunks are copied into a buffer of the
 * sink's (1 MiB, reused: one system call per MiB instead of one per network chunk).
 *
 * The file is opened, written and closed in the background, in order, while the caller reads
 * on: awaiting each write made the whole pull wait for the disk once per MiB. What is queued
 * and not yet written counts against the sink's `WriteBudget`, and `write` waits while that
 * is spent; a failure of the disk is thrown by the next `write` or by `commit`. The buffer is
 * handed to the disk as soon as the declared size has arrived, so that the blobs of a frame
 * waiting for its tag hold no memory.
 */
export class DiskBlobUpload {
  private written = 0
  private buffer: Buffer | undefined
  private filled = 0
  /** The file's operations so far (open, writes, close), chained in order. */
  private tail: Promise<void>
  /** Open until its close has run. */
  private file: FileHandle | undefined
  /** The temporary file was created (there is something to remove). */
  private created = false
  private closeQueued = false
  private failure: unknown

  private constructor(
    private readonly tmpPath: string,
    private readonly storedPath: string,
    private readonly declaredSize: number,
    private readonly budget: WriteBudget,
  ) {
    this.tail = this.track(
      openCreatingDir(tmpPath).then((file) => {
        this.file = file
        this.created = true
      }),
    )
  }

  /**
   * Starts the upload; the temporary file is opened in the background. `declaredSize` sizes the
   * write buffer (a negative one means unknown).
   */
  static start(
    blobstore: DiskBlobStore,
    cid: Cid,
    declaredSize: number,
    budget: WriteBudget,
  ): DiskBlobUpload {
    const tmpPath = blobstore.getTmpPath(`${TRANSFER_TMP}${unfinishedName()}`)
    return new DiskBlobUpload(tmpPath, blobstore.getStoredPath(cid), declaredSize, budget)
  }

  /** Bytes written so far. */
  get size(): number {
    return this.written
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.failure) throw this.failure
    if (this.closeQueued && chunk.length > 0)
      throw new Error(`blob longer than the ${this.declaredSize} bytes declared`)
    for (let offset = 0; offset < chunk.length; ) {
      this.buffer ??= this.budget.buffer()
      const n = Math.min(chunk.length - offset, this.buffer.length - this.filled)
      this.buffer.set(chunk.subarray(offset, offset + n), this.filled)
      this.filled += n
      offset += n
      this.written += n
      if (this.filled === this.buffer.length) await this.flush()
    }
    if (this.written === this.declaredSize) {
      await this.flush()
      // All of it is in: closing overlaps with the next blob's data.
      this.closeInBackground()
    }
  }

  /** Moves the finished file to its permanent path (a blob stored there already is the same bytes). */
  async commit(): Promise<void> {
    await this.flush()
    this.closeInBackground()
    await this.tail
    try {
      await rename(this.tmpPath, this.storedPath)
    } catch (err) {
      // The account's first blob: its directory does not exist yet.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      await mkdir(dirname(this.storedPath), { recursive: true })
      await rename(this.tmpPath, this.storedPath)
    }
  }

  async abort(): Promise<void> {
    if (this.buffer) this.budget.recycle(this.buffer)
    this.buffer = undefined
    this.filled = 0
    // The file may still be opening or writing: only then can it be closed and removed.
    await this.tail.catch(() => undefined)
    const file = this.file
    this.file = undefined
    this.closeQueued = true
    await file?.close().catch(() => undefined)
    if (this.created) await rm(this.tmpPath, { force: true })
  }

  /** Queues the buffer's bytes for the file, waiting while the sink's budget is spent. */
  private async flush(): Promise<void> {
    const buffer = this.buffer
    const length = this.filled
    this.buffer = undefined
    this.filled = 0
    if (!buffer || length === 0) return
    await this.budget.reserve(length)
    const written = this.tail.then(async () => {
      for (let offset = 0; offset < length; ) {
        const { bytesWritten } = await (this.file as FileHandle).write(buffer, offset, length - offset)
        offset += bytesWritten
      }
    })
    const release = () => {
      this.budget.release(length)
      this.budget.recycle(buffer)
    }
    written.then(release, release)
    this.tail = this.track(written)
  }

  private closeInBackground(): void {
    if (this.closeQueued) return
    this.closeQueued = true
    this.tail = this.track(
      this.tail.then(async () => {
        const file = this.file
        this.file = undefined
        await file?.close()
      }),
    )
  }

  /** Keeps the first failure for `write`, instead of an unhandled rejection. */
  private track(operation: Promise<void>): Promise<void> {
    operation.catch((err: unknown) => {
      this.failure ??= err
    })
    return operation
  }
}

async function openCreatingDir(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'w')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    await mkdir(dirname(path), { recursive: true })
    return open(path, 'w')
  }
}
