import { type FileHandle, mkdir, open, rename, rm } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Cid } from '@atproto/lex-data'
import type { DiskBlobStore } from '@atproto/pds'
import { unfinishedName } from '@pds-transfer/destination'

/** Prefix of our temporary files in the blob store's temporary directory, before `<pid>-<uuid>`. */
export const TRANSFER_TMP = 'transfer-'

/** Bytes gathered before a write to the file: decrypted chunks arrive at network size. */
const WRITE_BATCH = 1 << 20

/**
 * One blob written into the reference PDS's disk blob store: streamed into a file of its
 * temporary directory, then renamed to its permanent path once verified. The store's own
 * `putTemp` + `makePermanent` make both directories for every blob and read the whole
 * temporary file back into memory to write it again. Chunks are copied into a buffer of up to
 * 1 MiB and written when it fills (one system call per MiB instead of one per network chunk);
 * the buffer is released as soon as the declared size has arrived, so that the blobs of a
 * frame waiting for its tag hold no memory.
 */
export class DiskBlobUpload {
  private written = 0
  private buffer: Buffer | undefined
  private filled = 0

  private constructor(
    private readonly file: FileHandle,
    private readonly tmpPath: string,
    private readonly storedPath: string,
    private readonly declaredSize: number,
  ) {}

  /** `declaredSize` sizes the write buffer (a negative one means unknown). */
  static async start(blobstore: DiskBlobStore, cid: Cid, declaredSize: number): Promise<DiskBlobUpload> {
    const tmpPath = blobstore.getTmpPath(`${TRANSFER_TMP}${unfinishedName()}`)
    const file = await openCreatingDir(tmpPath)
    return new DiskBlobUpload(file, tmpPath, blobstore.getStoredPath(cid), declaredSize)
  }

  /** Bytes written so far. */
  get size(): number {
    return this.written
  }

  async write(chunk: Uint8Array): Promise<void> {
    for (let offset = 0; offset < chunk.length; ) {
      // Sized to what is still to come, so that a small blob takes a small buffer.
      const remaining = this.declaredSize - this.written
      this.buffer ??= Buffer.allocUnsafe(remaining > 0 ? Math.min(WRITE_BATCH, remaining) : WRITE_BATCH)
      const n = Math.min(chunk.length - offset, this.buffer.length - this.filled)
      this.buffer.set(chunk.subarray(offset, offset + n), this.filled)
      this.filled += n
      offset += n
      this.written += n
      if (this.filled === this.buffer.length) await this.flush()
    }
    if (this.written === this.declaredSize) {
      await this.flush()
      this.buffer = undefined
    }
  }

  /** Moves the finished file to its permanent path (a blob stored there already is the same bytes). */
  async commit(): Promise<void> {
    await this.flush()
    this.buffer = undefined
    await this.file.close()
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
    this.buffer = undefined
    await this.file.close().catch(() => undefined)
    await rm(this.tmpPath, { force: true })
  }

  private async flush(): Promise<void> {
    const buffer = this.buffer
    for (let offset = 0; buffer && offset < this.filled; ) {
      const { bytesWritten } = await this.file.write(buffer, offset, this.filled - offset)
      offset += bytesWritten
    }
    this.filled = 0
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
