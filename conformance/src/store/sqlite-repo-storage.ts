import { type Cid, decodeCid } from '@atproto/lex-data'
import { BlockMap, type CommitData, ReadableBlockstore, type RepoStorage } from '@atproto/repo'
import type Database from 'better-sqlite3'

/**
 * `@atproto/repo` storage for one account in the test store's SQLite file.
 * Keeps exactly the blocks reachable from the current commit (applyCommit drops
 * removed ones), as the reference PDS does, so a snapshot is a plain table scan.
 */
export class SqliteRepoStorage extends ReadableBlockstore implements RepoStorage {
  constructor(
    private readonly db: Database.Database,
    private readonly did: string,
    /** Runs inside each commit's transaction; throws to refuse it (an account deactivated meanwhile). */
    private readonly assertWritable: () => void = () => {},
  ) {
    super()
  }

  async getRoot(): Promise<Cid | null> {
    const row = this.db.prepare('SELECT commit_cid FROM repo_root WHERE did = ?').get(this.did) as
      | { commit_cid: Uint8Array }
      | undefined
    return row ? decodeCid(row.commit_cid) : null
  }

  async getBytes(cid: Cid): Promise<Uint8Array | null> {
    const row = this.db
      .prepare('SELECT bytes FROM repo_block WHERE did = ? AND cid = ?')
      .get(this.did, cid.bytes) as { bytes: Uint8Array } | undefined
    return row ? new Uint8Array(row.bytes) : null
  }

  async has(cid: Cid): Promise<boolean> {
    return (await this.getBytes(cid)) !== null
  }

  async getBlocks(cids: Cid[]): Promise<{ blocks: BlockMap; missing: Cid[] }> {
    const blocks = new BlockMap()
    const missing: Cid[] = []
    for (const cid of cids) {
      const bytes = await this.getBytes(cid)
      if (bytes) blocks.set(cid, bytes)
      else missing.push(cid)
    }
    return { blocks, missing }
  }

  async putBlock(cid: Cid, block: Uint8Array, rev: string): Promise<void> {
    this.db
      .prepare('INSERT OR IGNORE INTO repo_block (did, cid, bytes, rev) VALUES (?, ?, ?, ?)')
      .run(this.did, cid.bytes, block, rev)
  }

  async putMany(blocks: BlockMap, rev: string): Promise<void> {
    const insert = this.db.prepare(
      'INSERT OR IGNORE INTO repo_block (did, cid, bytes, rev) VALUES (?, ?, ?, ?)',
    )
    this.db.transaction(() => {
      for (const [cid, bytes] of blocks) insert.run(this.did, cid.bytes, bytes, rev)
    })()
  }

  async updateRoot(cid: Cid, rev: string): Promise<void> {
    this.db
      .prepare(
        'INSERT INTO repo_root (did, commit_cid, rev) VALUES (?, ?, ?) ON CONFLICT (did) DO UPDATE SET commit_cid = excluded.commit_cid, rev = excluded.rev',
      )
      .run(this.did, cid.bytes, rev)
  }

  async applyCommit(commit: CommitData): Promise<void> {
    const insert = this.db.prepare(
      'INSERT OR IGNORE INTO repo_block (did, cid, bytes, rev) VALUES (?, ?, ?, ?)',
    )
    const remove = this.db.prepare('DELETE FROM repo_block WHERE did = ? AND cid = ?')
    this.db.transaction(() => {
      this.assertWritable()
      for (const [cid, bytes] of commit.newBlocks) insert.run(this.did, cid.bytes, bytes, commit.rev)
      for (const cid of commit.removedCids) remove.run(this.did, cid.bytes)
      this.db
        .prepare(
          'INSERT INTO repo_root (did, commit_cid, rev) VALUES (?, ?, ?) ON CONFLICT (did) DO UPDATE SET commit_cid = excluded.commit_cid, rev = excluded.rev',
        )
        .run(this.did, commit.cid.bytes, commit.rev)
    })()
  }
}
