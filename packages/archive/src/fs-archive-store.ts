import { createHash, randomBytes } from 'node:crypto'
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises'
import { dirname, join, relative, sep } from 'node:path'
import { ArchiveError } from './archive-error.ts'
import { type ArchiveStore, isObjectKey, type StoredObject } from './archive-store.ts'

/** Temporary files of unfinished puts start with this; they are never listed. */
const TEMP_PREFIX = '.incoming-'

/**
 * An `ArchiveStore` in a directory: one file per object. A put writes a temporary file beside
 * the target, fsyncs it and renames it into place, so a crash or a full disk leaves the old
 * object or none, never a torn one; a temporary file left by a crash is removed by `sweep`.
 */
export class FsArchiveStore implements ArchiveStore {
  constructor(readonly root: string) {}

  async put(key: string, bytes: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<StoredObject> {
    const path = this.path(key)
    await mkdir(dirname(path), { recursive: true })
    const temp = join(dirname(path), `${TEMP_PREFIX}${randomBytes(6).toString('hex')}`)
    const file = await open(temp, 'wx')
    const hash = createHash('sha256')
    let size = 0
    try {
      for await (const chunk of bytes) {
        hash.update(chunk)
        size += chunk.length
        await file.write(chunk)
      }
      await file.sync()
      await file.close()
      await rename(temp, path)
    } catch (err) {
      await file.close().catch(() => {})
      await rm(temp, { force: true })
      throw err
    }
    return { size, sha256: hash.digest('hex') }
  }

  async get(key: string): Promise<AsyncIterable<Uint8Array> | undefined> {
    const path = this.path(key)
    // Opened before returning, so a missing object is `undefined`, not an error mid-read.
    const handle = await open(path, 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined
      throw err
    })
    if (!handle) return undefined
    // The stream closes the handle when it ends or is destroyed.
    return handle.createReadStream({ highWaterMark: 1 << 20 })
  }

  async has(key: string): Promise<boolean> {
    return stat(this.path(key)).then(
      (s) => s.isFile(),
      () => false,
    )
  }

  async *list(prefix: string): AsyncIterable<string> {
    const keys: string[] = []
    const walk = async (dir: string): Promise<void> => {
      const entries = await readdir(dir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return []
        throw err
      })
      for (const entry of entries) {
        if (entry.name.startsWith(TEMP_PREFIX)) continue
        const full = join(dir, entry.name)
        if (entry.isDirectory()) await walk(full)
        else if (entry.isFile()) keys.push(relative(this.root, full).split(sep).join('/'))
      }
    }
    // Only the directories the prefix can reach are read.
    const base = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : ''
    if (base && !isObjectKey(base))
      throw new ArchiveError('InvalidObjectKey', `not an object key prefix: ${prefix}`)
    await walk(base ? join(this.root, ...base.split('/')) : this.root)
    keys.sort()
    for (const key of keys) if (key.startsWith(prefix)) yield key
  }

  async delete(key: string): Promise<void> {
    await rm(this.path(key), { force: true })
  }

  /** Removes temporary files that a crashed put left behind; returns how many. */
  async sweep(): Promise<number> {
    let removed = 0
    const walk = async (dir: string): Promise<void> => {
      for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
        const full = join(dir, entry.name)
        if (entry.isDirectory()) await walk(full)
        else if (entry.name.startsWith(TEMP_PREFIX)) {
          await rm(full, { force: true })
          removed++
        }
      }
    }
    await walk(this.root)
    return removed
  }

  private path(key: string): string {
    if (!isObjectKey(key))
      throw new ArchiveError('InvalidObjectKey', `not an object key: ${JSON.stringify(key)}`)
    return join(this.root, ...key.split('/'))
  }
}
