import { once } from 'node:events'
import { PassThrough } from 'node:stream'
import type { Cid } from '@atproto/lex-data'
import type { AppContext } from '@atproto/pds'

type BlobStore = ReturnType<AppContext['blobstore']>

/**
 * One blob written through any blob store of the reference PDS (disk or S3): streamed into
 * `putTemp`, made permanent once verified. `DiskBlobUpload` is the faster path for the disk store.
 */
export class BlobStoreUpload {
  private written = 0
  /** A failure of the store, kept for write/commit instead of an unhandled rejection. */
  private failure: unknown

  private constructor(
    private readonly blobstore: BlobStore,
    private readonly cid: Cid,
    private readonly body: PassThrough,
    private readonly stored: Promise<string>,
  ) {
    stored.catch((err) => {
      this.failure ??= err
      body.destroy()
    })
  }

  static start(blobstore: BlobStore, cid: Cid): BlobStoreUpload {
    const body = new PassThrough({ highWaterMark: 1 << 20 })
    return new BlobStoreUpload(blobstore, cid, body, blobstore.putTemp(body))
  }

  /** Bytes written so far. */
  get size(): number {
    return this.written
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.failure) throw this.failure
    this.written += chunk.length
    if (!this.body.write(chunk)) await Promise.race([once(this.body, 'drain'), this.stored])
    if (this.failure) throw this.failure
  }

  async commit(): Promise<void> {
    this.body.end()
    await this.blobstore.makePermanent(await this.stored, this.cid)
  }

  async abort(): Promise<void> {
    this.body.destroy()
    const key = await this.stored.catch(() => undefined)
    if (key) await this.blobstore.delete(this.cid).catch(() => undefined)
  }
}
