/**
 * The files of a plain export of one account, as people hold them ("bring your own backup"): a
 * folder on disk, or a zip of one (the backup /migrate offers, or a zipped goat export). Files
 * are read where they are, one stream at a time per request, never unpacked or held whole: an
 * export of gigabytes costs no more memory than one of kilobytes. Entry names are only matched,
 * never used as paths to write to, so a hostile zip's `../` names cannot reach the disk.
 */
import { createReadStream } from 'node:fs'
import { open, readdir, stat } from 'node:fs/promises'
import { join, relative, sep } from 'node:path'
import type { Readable } from 'node:stream'
import yauzl from 'yauzl'

/** Most files an export may hold (an account with 100k images is far below). */
const MAX_ENTRIES = 1_000_000

/** An export's files by name (`/`-separated, relative to its root), each with its size. */
export interface ExportFiles {
  readonly entries: ReadonlyMap<string, number>
  /** A stream of one file's bytes; the caller destroys it when done. */
  open(name: string): Promise<Readable>
  /** Releases the zip's file handle (idempotent). */
  close(): Promise<void>
}

/** The export could not be opened: `message` says what the person can do about it. */
export class ExportUnreadable extends Error {
  override readonly name = 'ExportUnreadable'
}

/** Opens a folder or a zip file (told apart by the zip's signature, not by the name). */
export async function openExportFiles(path: string): Promise<ExportFiles> {
  const info = await stat(path).catch(() => undefined)
  if (!info) throw new ExportUnreadable(`there is no file or folder at ${path}`)
  if (info.isDirectory()) return openFolder(path)
  if (!(await isZip(path)))
    throw new ExportUnreadable(
      'the file is not a zip: choose the .zip you downloaded, or zip your export folder first',
    )
  return openZip(path)
}

async function isZip(path: string): Promise<boolean> {
  const handle = await open(path, 'r')
  try {
    const head = Buffer.alloc(4)
    const { bytesRead } = await handle.read(head, 0, 4, 0)
    return bytesRead === 4 && head.readUInt32LE(0) === 0x04034b50
  } finally {
    await handle.close()
  }
}

async function openFolder(root: string): Promise<ExportFiles> {
  const entries = new Map<string, number>()
  for (const dirent of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!dirent.isFile()) continue
    if (entries.size >= MAX_ENTRIES) throw new ExportUnreadable(`the folder holds over ${MAX_ENTRIES} files`)
    const full = join(dirent.parentPath, dirent.name)
    entries.set(relative(root, full).split(sep).join('/'), (await stat(full)).size)
  }
  return {
    entries,
    open: async (name) => {
      if (!entries.has(name)) throw new ExportUnreadable(`the export has no file ${name}`)
      return createReadStream(join(root, ...name.split('/')))
    },
    close: async () => {},
  }
}

async function openZip(path: string): Promise<ExportFiles> {
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
    yauzl.open(path, { lazyEntries: true, autoClose: false }, (err, opened) =>
      err ? reject(new ExportUnreadable(`the zip is damaged (${err.message})`)) : resolve(opened),
    ),
  )
  const byName = new Map<string, yauzl.Entry>()
  try {
    await new Promise<void>((resolve, reject) => {
      zip.on('entry', (entry: yauzl.Entry) => {
        // Folders, and the resource forks macOS adds to zips it makes, are not the account's.
        if (!entry.fileName.endsWith('/') && !entry.fileName.startsWith('__MACOSX/')) {
          if (byName.size >= MAX_ENTRIES) {
            reject(new ExportUnreadable(`the zip holds over ${MAX_ENTRIES} files`))
            return
          }
          byName.set(entry.fileName, entry)
        }
        zip.readEntry()
      })
      zip.once('end', () => resolve())
      zip.once('error', (err: Error) => reject(new ExportUnreadable(`the zip is damaged (${err.message})`)))
      zip.readEntry()
    })
  } catch (err) {
    zip.close()
    throw err
  }
  let closed = false
  return {
    entries: new Map([...byName].map(([name, entry]) => [name, entry.uncompressedSize])),
    open: (name) => {
      const entry = byName.get(name)
      if (!entry) return Promise.reject(new ExportUnreadable(`the export has no file ${name}`))
      return new Promise((resolve, reject) =>
        zip.openReadStream(entry, (err, stream) =>
          err
            ? reject(new ExportUnreadable(`${name} in the zip is damaged (${err.message})`))
            : resolve(stream),
        ),
      )
    },
    close: async () => {
      if (closed) return
      closed = true
      zip.close()
    },
  }
}
