import { randomUUID } from 'node:crypto'
import { type FileHandle, mkdir, open, rename, rm } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Cid } from '@atproto/lex-data'
import type { DiskBlobStore } from '@atproto/pds'

/**
 * One blob written into the reference PDS's disk blob store: streamed into a file of its
 * temporary directory, then renamed to its permanent path once verified. The store's own
 * `putTemp` + `makePermanent` make both directories for every blob and read the whole
 * temporary file back into memory to write it again.
 */
export class DiskBlobUpload {
  private written = 0

  private constructor(
    private readonly file: FileHandle,
    private readonly tmpPath: string,
    private readonly storedPath: string,
  ) {}

  static async start(blobstore: DiskBlobStore, cid: Cid): Promise<DiskBlobUpload> {
    const tmpPath = blobstore.getTmpPath(`transfer-${randomUUID()}`)
    const file = await openCreatingDir(tmpPath)
    return new DiskBlobUpload(file, tmpPath, blobstore.getStoredPath(cid))
  }

  /** Bytes written so far. */
  get size(): number {
    return this.written
  }

  async write(chunk: Uint8Array): Promise<void> {
    for (let offset = 0; offset < chunk.length; ) {
      const { bytesWritten } = await this.file.write(chunk, offset)
      offset += bytesWritten
    }
    this.written += chunk.length
  }

  /** Moves the finished file to its permanent path (a blob stored there already is the same bytes). */
  async commit(): Promise<void> {
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
    await this.file.close().catch(() => undefined)
    await rm(this.tmpPath, { force: true })
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
