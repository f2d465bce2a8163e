import { enumBlobRefs, type LexValue } from '@atproto/lex-data'
import type { AppContext } from '@atproto/pds'
import { cborToLex } from '@atproto/repo'
import Database from 'better-sqlite3'

/** Stored until a referencing record tells the real type (blobpacks carry none). */
export const UNKNOWN_MIME = 'application/octet-stream'

/**
 * The `blob` rows of one account being imported, on a writable connection of our own to its
 * actor database, kept open with its statements prepared while the blobs arrive. The reference
 * PDS opens a fresh SQLite connection for every `actorStore` call and closes it afterwards
 * (loading the schema on the first statement, checkpointing the WAL on close): three of those
 * per blob took most of the destination's CPU in `bench --only pds`. Statements here run
 * synchronously and autocommit, so no lock is held across an `await` and the PDS's own
 * connections (same process, same thread) never wait for this one.
 */
export class ActorBlobIndex {
  private readonly hasRow: Database.Statement<[string], unknown>
  private readonly referencingRecord: Database.Statement<[string], { content: Uint8Array }>
  private readonly insertRow: Database.Statement<[string, string, number, string]>

  private constructor(private readonly db: Database.Database) {
    this.hasRow = db.prepare('SELECT 1 FROM blob WHERE cid = ? AND tempKey IS NULL')
    this.referencingRecord = db.prepare(
      `SELECT repo_block.content FROM record_blob
       JOIN record ON record.uri = record_blob.recordUri
       JOIN repo_block ON repo_block.cid = record.cid
       WHERE record_blob.blobCid = ? LIMIT 1`,
    )
    this.insertRow = db.prepare(
      'INSERT INTO blob (cid, mimeType, size, tempKey, createdAt) VALUES (?, ?, ?, NULL, ?) ON CONFLICT DO NOTHING',
    )
  }

  static async open(ctx: AppContext, did: string): Promise<ActorBlobIndex> {
    const { dbLocation } = await ctx.actorStore.getLocation(did)
    return new ActorBlobIndex(new Database(dbLocation, { fileMustExist: true }))
  }

  /** Whether the account has a permanent (non-temporary) row for the blob. */
  has(cid: string): boolean {
    return this.hasRow.get(cid) !== undefined
  }

  /** The MIME type a record gives the blob, once the repo naming it is imported. */
  mimeType(cid: string): string {
    const row = this.referencingRecord.get(cid)
    if (!row) return UNKNOWN_MIME
    for (const ref of enumBlobRefs(cborToLex(row.content) as LexValue, {
      allowLegacy: true,
      strict: false,
    })) {
      if (('cid' in ref ? ref.cid : ref.ref.toString()) === cid) return ref.mimeType
    }
    return UNKNOWN_MIME
  }

  /** Records a stored blob (a row that exists already is kept). */
  insert(cid: string, mimeType: string, size: number): void {
    this.insertRow.run(cid, mimeType, size, new Date().toISOString())
  }

  close(): void {
    this.db.close()
  }
}
