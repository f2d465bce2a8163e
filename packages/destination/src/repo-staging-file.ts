import { rm } from 'node:fs/promises'
import Database from 'better-sqlite3'
import type { RepoStaging, VerifiedBlock } from './account-sink.ts'

/**
 * Staged blocks of one repo import in a SQLite file of their own, outside the account's actor
 * database: nothing reaches the account until the sink copies them in one transaction, and a
 * discarded import is one file deleted.
 */
export class RepoStagingFile implements RepoStaging {
  private readonly db: Database.Database
  private readonly insert: Database.Statement
  private readonly select: Database.Statement

  constructor(readonly path: string) {
    this.db = new Database(path)
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = OFF')
    this.db.exec('CREATE TABLE IF NOT EXISTS block (cid BLOB PRIMARY KEY, bytes BLOB NOT NULL) WITHOUT ROWID')
    this.insert = this.db.prepare('INSERT OR IGNORE INTO block (cid, bytes) VALUES (?, ?)')
    this.select = this.db.prepare('SELECT bytes FROM block WHERE cid = ?').pluck()
  }

  async put(blocks: VerifiedBlock[]): Promise<void> {
    this.db.transaction(() => {
      for (const b of blocks) this.insert.run(b.cid, b.bytes)
    })()
  }

  async get(cid: Uint8Array): Promise<Uint8Array | undefined> {
    // A view, not a copy: better-sqlite3 returns a fresh Buffer per read; some decoders want a
    // plain Uint8Array rather than the Buffer subclass.
    const bytes = this.select.get(cid) as Buffer | undefined
    return bytes && new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }

  /** Every staged block, in batches (for the copy into the actor database). */
  *batches(size: number): Generator<{ cid: Uint8Array; bytes: Uint8Array }[]> {
    let batch: { cid: Uint8Array; bytes: Uint8Array }[] = []
    for (const row of this.db.prepare('SELECT cid, bytes FROM block').iterate() as Iterable<{
      cid: Uint8Array
      bytes: Uint8Array
    }>) {
      batch.push(row)
      if (batch.length === size) {
        yield batch
        batch = []
      }
    }
    if (batch.length > 0) yield batch
  }

  async discard(): Promise<void> {
    if (this.db.open) this.db.close()
    await Promise.all(['', '-wal', '-shm'].map((suffix) => rm(this.path + suffix, { force: true })))
  }
}
