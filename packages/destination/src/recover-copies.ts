/**
 * The copies /recover restores from, kept so a restore outlives a restart of this server: the
 * files people upload (the zip /migrate offered, a zipped export folder) and the address and
 * token of a copy served over HTTP. Invariant: an uploaded file is only ever named by the SHA-256
 * of its bytes once every byte is on disk (written under a temporary name, then renamed), so a cut
 * upload or a full disk never leaves a file a restore could read; each kept copy has a note of
 * the restore reading it, and `sweep` removes what no unfinished restore needs. The notes of
 * addresses hold the copy's access token (mode 0600, as the OAuth store holds sessions).
 */
import { createHash, randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { type ExportSourceClient, exportSourceClient } from './export-source-client.ts'
import type { InboundTransfer } from './inbound-transfer.ts'
import { restoreSourceClient } from './restore-source-client.ts'
import type { SourceClient } from './source-client.ts'

/** What the key's proof names as the copy when it is a file sent with the proof. */
export const UPLOADED_COPY = 'a file uploaded to this server'

/** The scheme a restore's record names an uploaded copy by: `upload:<sha256 hex>`. */
const SCHEME = 'upload:'
/** The note of a copy at an address: `<transferId>.address.json`. */
const ADDRESS_NOTE = '.address.json'
/** An upload no restore took up (the proof passed, then the server stopped) is kept this long. */
const ORPHAN_MS = 60 * 60_000
/** A failed restore keeps its upload this long, so "try again" needs no second upload. */
const FAILED_KEPT_MS = 72 * 60 * 60_000

/** The upload could not be kept: `message` says what the person can do. */
export class UploadRefused extends Error {
  override readonly name = 'UploadRefused'
}

export class RecoverCopies {
  /** Clients open on uploads, by transfer, closed when their restore no longer reads. */
  private readonly open = new Map<string, ExportSourceClient>()

  constructor(
    readonly dir: string,
    /** Largest file accepted, in bytes (default 16 GiB). */
    readonly maxBytes: number = 16 * 1024 ** 3,
  ) {}

  /**
   * Writes `file` to disk, hashing it on the way. `truncated` tells whether the upload was cut at
   * `maxBytes` by the form parser. Returns the copy's name for the restore's record.
   */
  async save(
    file: Readable,
    truncated: () => boolean,
  ): Promise<{ source: string; path: string; bytes: number }> {
    await mkdir(this.dir, { recursive: true })
    const temp = join(this.dir, `.incoming-${randomBytes(8).toString('hex')}`)
    const hash = createHash('sha256')
    let bytes = 0
    file.on('data', (chunk: Buffer) => {
      hash.update(chunk)
      bytes += chunk.length
    })
    try {
      await pipeline(file, createWriteStream(temp))
    } catch (err) {
      await rm(temp, { force: true })
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC')
        throw new UploadRefused(
          'this server has no room for the file right now; try again later, or ask its operator',
        )
      throw new UploadRefused(
        `the upload was cut (${(err as Error).message}); choose the file and send it again`,
      )
    }
    if (truncated()) {
      await rm(temp, { force: true })
      throw new UploadRefused(
        `the file is larger than this server accepts (${gib(this.maxBytes)}); ask its operator, or restore from a backup service's address`,
      )
    }
    if (bytes === 0) {
      await rm(temp, { force: true })
      throw new UploadRefused(
        'choose the file of your copy (the zip you downloaded, or a zipped export folder)',
      )
    }
    const sha = hash.digest('hex')
    const path = join(this.dir, `${sha}.zip`)
    await rename(temp, path)
    return { source: `${SCHEME}${sha}`, path, bytes }
  }

  /** A client for the uploaded copy `source` of `did`, kept open for `transferId`'s restore. */
  async client(source: string, did: string): Promise<ExportSourceClient> {
    return exportSourceClient(this.pathOf(source), did, source)
  }

  /** Notes that `transferId` reads the upload, and closes its client once `done` settles. */
  async attach(transferId: string, client: ExportSourceClient, done: Promise<unknown>): Promise<void> {
    await writeFile(`${this.pathOf(client.url)}.json`, JSON.stringify({ transferId }))
    this.open.set(transferId, client)
    const release = () => this.release(transferId)
    done.then(release, release)
  }

  /** Notes the address (and token) of `transferId`'s copy, so a restart resumes its pull. */
  async rememberAddress(transferId: string, url: string, token?: string): Promise<void> {
    await mkdir(this.dir, { recursive: true })
    await writeFile(this.addressNote(transferId), JSON.stringify({ url, ...(token && { token }) }), {
      mode: 0o600,
    })
  }

  /**
   * For the engine's `restoreClient`: the copy a restore reads again after a restart (its
   * uploaded file, or its address), or undefined when it is not a restore of ours or the copy is
   * gone (the engine then says the restore was interrupted).
   */
  async restoreClient(t: InboundTransfer): Promise<SourceClient | undefined> {
    if (!t.sourceUrl.startsWith(SCHEME)) {
      const note = await readFile(this.addressNote(t.transferId), 'utf8').then(
        (text) => JSON.parse(text) as { url: string; token?: string },
        () => undefined,
      )
      return note && restoreSourceClient(note.url, t.did, note.token)
    }
    const client = await this.client(t.sourceUrl, t.did).catch(() => undefined)
    if (client) this.open.set(t.transferId, client)
    return client
  }

  /**
   * Removes an upload no restore took up (it was not an export of the account, or the restore
   * was refused); one a restore reads (the same file sent twice) is left to it.
   */
  async discard(source: string): Promise<void> {
    const path = this.pathOf(source)
    if (await stat(`${path}.json`).catch(() => undefined)) return
    await rm(path, { force: true })
  }

  /** Closes the client held for `transferId` (idempotent). */
  async release(transferId: string): Promise<void> {
    const client = this.open.get(transferId)
    this.open.delete(transferId)
    await client?.close()
  }

  /** Removes uploads no unfinished restore needs; returns how many. */
  async sweep(
    get: (transferId: string) => Promise<InboundTransfer | undefined>,
    now = Date.now(),
  ): Promise<number> {
    let removed = 0
    const names = await readdir(this.dir).catch(() => [] as string[])
    for (const name of names) {
      if (name.endsWith(ADDRESS_NOTE)) {
        const t = await get(name.slice(0, -ADDRESS_NOTE.length))
        if (t && stillNeeded(t, now)) continue
        await rm(join(this.dir, name), { force: true })
        removed++
        continue
      }
      if (!name.endsWith('.zip') && !name.startsWith('.incoming-')) continue
      const path = join(this.dir, name)
      const modified = (await stat(path).catch(() => undefined))?.mtimeMs ?? 0
      const note = await readFile(`${path}.json`, 'utf8').then(
        (text) => JSON.parse(text) as { transferId?: string },
        () => undefined,
      )
      const t = note?.transferId ? await get(note.transferId) : undefined
      const needed = t ? stillNeeded(t, now) : now - modified < ORPHAN_MS
      if (needed) continue
      if (t) await this.release(t.transferId)
      await rm(path, { force: true })
      await rm(`${path}.json`, { force: true })
      removed++
    }
    return removed
  }

  private addressNote(transferId: string): string {
    if (!/^[\w-]+$/.test(transferId)) throw new UploadRefused(`${transferId} is not a transfer id`)
    return join(this.dir, `${transferId}${ADDRESS_NOTE}`)
  }

  private pathOf(source: string): string {
    const sha = source.slice(SCHEME.length)
    if (!source.startsWith(SCHEME) || !/^[0-9a-f]{64}$/.test(sha))
      throw new UploadRefused(`${source} does not name an uploaded copy`)
    return join(this.dir, `${sha}.zip`)
  }
}

/** Whether a restore may still read its upload: unfinished, or failed recently (it can be retried). */
function stillNeeded(t: InboundTransfer, now: number): boolean {
  if (t.status === 'completed') return false
  if (t.status === 'failed') return t.failure?.reason !== 'Cancelled' && now - t.updatedAt < FAILED_KEPT_MS
  return true
}

function gib(bytes: number): string {
  return `${(bytes / 1024 ** 3).toFixed(bytes % 1024 ** 3 === 0 ? 0 : 1)} GiB`
}
