import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3'
import { ArchiveError } from './archive-error.ts'
import { type ArchiveStore, isObjectKey, type StoredObject } from './archive-store.ts'

export interface S3ArchiveStoreOptions {
  bucket: string
  /** Prepended to every object key (e.g. `backups/`). */
  prefix?: string
  /** The S3 client's settings: region, endpoint (any S3-compatible server), credentials. */
  client: S3ClientConfig
  /** Where a put spools its bytes before the upload (default: the system's temporary directory). */
  spoolDir?: string
}

/**
 * An `ArchiveStore` in an S3-compatible bucket. A put is one PutObject, which S3 makes visible
 * whole or not at all; the bytes are first spooled to a local file (hashing them), so memory
 * stays bounded and the upload has the length S3 asks for up front.
 */
export class S3ArchiveStore implements ArchiveStore {
  readonly client: S3Client
  private readonly prefix: string

  constructor(private readonly options: S3ArchiveStoreOptions) {
    // Checksums only where S3 requires them: the SDK's default (aws-chunked bodies with a trailing
    // CRC) is not understood by many S3-compatible servers; our own SHA-256 covers integrity.
    this.client = new S3Client({
      forcePathStyle: true,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      ...options.client,
    })
    this.prefix = options.prefix ?? ''
  }

  async put(key: string, bytes: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<StoredObject> {
    const name = this.name(key)
    const dir = await mkdtemp(join(this.options.spoolDir ?? tmpdir(), 'archive-put-'))
    const path = join(dir, randomBytes(6).toString('hex'))
    try {
      const file = await open(path, 'w')
      const hash = createHash('sha256')
      let size = 0
      try {
        for await (const chunk of bytes) {
          hash.update(chunk)
          size += chunk.length
          await file.write(chunk)
        }
      } finally {
        await file.close()
      }
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.options.bucket,
          Key: name,
          Body: createReadStream(path),
          ContentLength: size,
          ContentType: 'application/octet-stream',
        }),
      )
      return { size, sha256: hash.digest('hex') }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }

  async get(key: string): Promise<AsyncIterable<Uint8Array> | undefined> {
    try {
      const res = await this.client.send(
        new GetObjectCommand({ Bucket: this.options.bucket, Key: this.name(key) }),
      )
      return res.Body as Readable
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
  }

  async has(key: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.options.bucket, Key: this.name(key) }))
      return true
    } catch (err) {
      if (isNotFound(err)) return false
      throw err
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    let token: string | undefined
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.options.bucket,
          Prefix: this.prefix + prefix,
          ...(token && { ContinuationToken: token }),
        }),
      )
      // S3 lists in UTF-8 byte order, the order the interface promises.
      for (const object of page.Contents ?? []) if (object.Key) yield object.Key.slice(this.prefix.length)
      token = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (token)
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.options.bucket, Key: this.name(key) }))
  }

  private name(key: string): string {
    if (!isObjectKey(key))
      throw new ArchiveError('InvalidObjectKey', `not an object key: ${JSON.stringify(key)}`)
    return this.prefix + key
  }
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } }
  return e.name === 'NoSuchKey' || e.name === 'NotFound' || e.$metadata?.httpStatusCode === 404
}
