import { createHash, randomBytes, scryptSync, timingSafeEqual } from 'node:crypto'
import { mkdir, open, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Keypair } from '@atproto/crypto'
import { decodeCid, enumBlobRefs, getBlobCid, type LexMap } from '@atproto/lex-data'
import { BlockMap, blocksToCarFile, type RecordWriteOp, Repo, WriteOpAction } from '@atproto/repo'
import type { AccountState } from '@pds-transfer/core'
import {
  type AccountSource,
  type BlobPage,
  carBlockLength,
  carBlockPrefix,
  carHeader,
  type RepoSnapshot,
  type SourceAccount,
  type SourceAccountStatus,
} from '@pds-transfer/source'
import Database from 'better-sqlite3'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { SqliteRepoStorage } from './sqlite-repo-storage.ts'

const SCHEMA = `
CREATE TABLE IF NOT EXISTS account (
  did TEXT PRIMARY KEY, handle TEXT, status TEXT NOT NULL, state TEXT NOT NULL DEFAULT '{}',
  preferences TEXT NOT NULL DEFAULT '[]', retain_until INTEGER, signing_key TEXT
);
CREATE TABLE IF NOT EXISTS staged_block (stage TEXT NOT NULL, cid BLOB NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (stage, cid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repo_root (did TEXT PRIMARY KEY, commit_cid BLOB NOT NULL, rev TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS repo_block (
  did TEXT NOT NULL, cid BLOB NOT NULL, bytes BLOB NOT NULL, rev TEXT NOT NULL, PRIMARY KEY (did, cid)
);
CREATE TABLE IF NOT EXISTS blob (did TEXT NOT NULL, cid TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (did, cid));
CREATE TABLE IF NOT EXISTS record_blob (did TEXT NOT NULL, record TEXT NOT NULL, cid TEXT NOT NULL, PRIMARY KEY (did, record, cid));
CREATE TABLE IF NOT EXISTS plc_token (did TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS account_password (did TEXT PRIMARY KEY, salt BLOB NOT NULL, hash BLOB NOT NULL);
`

/** Size of the chunks a repo snapshot streams its CAR in. */
const CAR_CHUNK = 64 * 1024

/** A record write for `writeRecords`. */
export interface RecordWrite {
  collection: `${string}.${string}.${string}`
  rkey: string
  /** Omit to delete. */
  record?: LexMap
  /** Replace an existing record instead of creating one. */
  update?: boolean
}

/**
 * A small PDS storage: SQLite for accounts and repo blocks, files for blobs.
 * Serves as the `AccountSource` of tests and the conformance harness. Tokens
 * "emailed" by `requestPlcToken` are kept in `outbox` for tests to read.
 */
export class SqliteAccountStore implements AccountSource {
  readonly db: Database.Database
  readonly outbox: { did: string; token: string }[] = []
  /** How long a PLC token is valid (default 15 minutes). */
  plcTokenTtlMs = 15 * 60_000
  /**
   * Blobs public reads must not serve (`openBlob`: sync.getBlob, the v1 stream): those only
   * permissioned records reference, set by the space store (spec/permissioned-data.md, open point 8).
   */
  private isPrivateBlob?: (did: string, cid: string) => boolean

  private constructor(
    readonly dir: string,
    readonly path: string,
  ) {
    this.db = new Database(path)
    this.db.pragma('journal_mode = WAL')
    // WAL with NORMAL syncs at checkpoints, not at every commit; a crash of the process loses
    // nothing committed (only a power cut could lose the last transactions). An import commits
    // in many small transactions (a staged batch of blocks, a blob), each an fsync under FULL.
    this.db.pragma('synchronous = NORMAL')
    this.db.exec(SCHEMA)
  }

  static async open(dir: string): Promise<SqliteAccountStore> {
    await mkdir(join(dir, 'blobs'), { recursive: true })
    return new SqliteAccountStore(dir, join(dir, 'store.sqlite'))
  }

  close(): void {
    this.db.close()
  }

  // --- setting up accounts (fixtures, writes during a transfer) ---

  /** Creates an active account with an empty signed repo. */
  async createAccount(params: {
    did: string
    handle?: string
    signingKey: Keypair
    state?: AccountState
    preferences?: unknown[]
  }): Promise<void> {
    this.db
      .prepare('INSERT INTO account (did, handle, status, state, preferences) VALUES (?, ?, ?, ?, ?)')
      .run(
        params.did,
        params.handle ?? null,
        'active',
        JSON.stringify(params.state ?? {}),
        JSON.stringify(params.preferences ?? []),
      )
    await Repo.create(new SqliteRepoStorage(this.db, params.did), params.did, params.signingKey)
  }

  /** Stores blob bytes and returns their CIDv1/raw/sha256. */
  async putBlob(did: string, bytes: Uint8Array): Promise<CID> {
    const cid = CID.createV1(raw.code, await sha256.digest(bytes))
    await writeFile(this.blobPath(cid.toString()), bytes)
    this.db
      .prepare('INSERT OR IGNORE INTO blob (did, cid, size) VALUES (?, ?, ?)')
      .run(did, cid.toString(), bytes.length)
    return cid
  }

  /** Applies record writes in one signed commit; returns the new rev. */
  async writeRecords(did: string, signingKey: Keypair, writes: RecordWrite[]): Promise<string> {
    // A deactivated account takes no writes (what completeTransfer relies on): checked again
    // inside the commit's transaction, so a write that began before a deactivation cannot
    // commit after it (AccountSource.deactivate's contract).
    const assertWritable = () => {
      const row = this.db.prepare('SELECT status FROM account WHERE did = ?').get(did) as
        | { status: string }
        | undefined
      if (row && row.status !== 'active') throw new Error(`RepoDeactivated: ${did} is ${row.status}`)
    }
    assertWritable()
    const storage = new SqliteRepoStorage(this.db, did, assertWritable)
    const repo = await Repo.load(storage)
    const ops = writes.map((w): RecordWriteOp => {
      const { collection, rkey, record } = w
      if (!record) return { action: WriteOpAction.Delete, collection, rkey }
      return w.update
        ? { action: WriteOpAction.Update, collection, rkey, record }
        : { action: WriteOpAction.Create, collection, rkey, record }
    })
    const updated = await repo.applyWrites(ops, signingKey)
    const link = this.db.prepare('INSERT OR IGNORE INTO record_blob (did, record, cid) VALUES (?, ?, ?)')
    const unlink = this.db.prepare('DELETE FROM record_blob WHERE did = ? AND record = ?')
    this.db.transaction(() => {
      for (const w of writes) {
        const path = `${w.collection}/${w.rkey}`
        unlink.run(did, path)
        if (w.record)
          for (const ref of enumBlobRefs(w.record)) link.run(did, path, getBlobCid(ref).toString())
      }
    })()
    return updated.commit.rev
  }

  /** Whether `password` is the one set for signing in to `did` here (scrypt, as PDSes keep them). */
  verifyPassword(did: string, password: string): boolean {
    const row = this.db.prepare('SELECT salt, hash FROM account_password WHERE did = ?').get(did) as
      | { salt: Buffer; hash: Buffer }
      | undefined
    return row !== undefined && timingSafeEqual(scryptSync(password, row.salt, 64), row.hash)
  }

  /** Preferences and private state as a PDS would keep them. */
  setPreferences(did: string, preferences: unknown[]): void {
    this.db.prepare('UPDATE account SET preferences = ? WHERE did = ?').run(JSON.stringify(preferences), did)
  }

  // --- AccountSource ---

  async getAccount(did: string): Promise<SourceAccount | undefined> {
    const row = this.db.prepare('SELECT did, handle, status FROM account WHERE did = ?').get(did) as
      | { did: string; handle: string | null; status: SourceAccountStatus }
      | undefined
    return row && { did: row.did, status: row.status, ...(row.handle !== null && { handle: row.handle }) }
  }

  async snapshotRepo(did: string, options: { since?: string } = {}): Promise<RepoSnapshot> {
    const { since } = options
    // A separate connection holding a read transaction sees one consistent state (WAL) while writes go on.
    const reader = new Database(this.path, { readonly: true })
    reader.exec('BEGIN')
    try {
      const root = reader.prepare('SELECT commit_cid, rev FROM repo_root WHERE did = ?').get(did) as
        | { commit_cid: Uint8Array; rev: string }
        | undefined
      if (!root) throw new Error(`no repo for ${did}`)
      const commitCid = decodeCid(root.commit_cid)
      const header = carHeader(commitCid)
      // Each block keeps the rev of the commit that first wrote it: `since` selects the newer ones.
      const where = since === undefined ? 'did = @did' : 'did = @did AND rev > @since'
      const params = since === undefined ? { did } : { did, since }
      const sizes = reader
        .prepare(`SELECT length(cid) AS c, length(bytes) AS b FROM repo_block WHERE ${where}`)
        .iterate(params) as Iterable<{ c: number; b: number }>
      let carLength = header.length
      for (const { c, b } of sizes) carLength += carBlockLength(c, b)
      return {
        rev: root.rev,
        commitCid: commitCid.toString(),
        carLength,
        ...(since !== undefined && { since }),
        async *open() {
          yield header
          const rows = reader
            .prepare(`SELECT cid, bytes FROM repo_block WHERE ${where}`)
            .iterate(params) as Iterable<{ cid: Uint8Array; bytes: Uint8Array }>
          // Blocks are ~100-300 bytes: packed into 64 KiB chunks here, a 200k-record CAR is a few
          // hundred chunks for the encoder instead of 400k (each a promise through every stage).
          let chunk = new Uint8Array(CAR_CHUNK)
          let filled = 0
          for (const { cid, bytes } of rows) {
            const prefix = carBlockPrefix(cid, bytes.length)
            const length = prefix.length + bytes.length
            if (filled + length > CAR_CHUNK && filled > 0) {
              yield chunk.subarray(0, filled)
              chunk = new Uint8Array(CAR_CHUNK)
              filled = 0
            }
            if (length > CAR_CHUNK) {
              yield prefix
              yield bytes
              continue
            }
            chunk.set(prefix, filled)
            chunk.set(bytes, filled + prefix.length)
            filled += length
          }
          if (filled > 0) yield chunk.subarray(0, filled)
        },
        async release() {
          if (reader.open) {
            reader.exec('COMMIT')
            reader.close()
          }
        },
      }
    } catch (err) {
      reader.close()
      throw err
    }
  }

  async currentRev(did: string): Promise<string> {
    const row = this.db.prepare('SELECT rev FROM repo_root WHERE did = ?').get(did) as
      | { rev: string }
      | undefined
    if (!row) throw new Error(`no repo for ${did}`)
    return row.rev
  }

  async listBlobs(did: string, options: { cursor?: string; limit: number }): Promise<BlobPage> {
    const rows = this.db
      .prepare(
        `SELECT DISTINCT b.cid, b.size FROM blob b JOIN record_blob r ON r.did = b.did AND r.cid = b.cid
         WHERE b.did = ? AND b.cid > ? ORDER BY b.cid LIMIT ?`,
      )
      .all(did, options.cursor ?? '', options.limit) as { cid: string; size: number }[]
    const last = rows.at(-1)
    return { blobs: rows, ...(rows.length === options.limit && last && { cursor: last.cid }) }
  }

  /** Hides from `openBlob` the blobs `isPrivate` names (a space store's; see the field). */
  hidePrivateBlobs(isPrivate: (did: string, cid: string) => boolean): void {
    this.isPrivateBlob = isPrivate
  }

  async openBlob(did: string, cid: string): Promise<AsyncIterable<Uint8Array> | undefined> {
    const row = this.db.prepare('SELECT 1 FROM blob WHERE did = ? AND cid = ?').get(did, cid)
    if (!row || this.isPrivateBlob?.(did, cid)) return undefined
    // A row whose file is gone (a disk that lost it) is a blob this PDS does not have.
    const file = await open(this.blobPath(cid)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined
      throw err
    })
    return file?.createReadStream({ highWaterMark: 1 << 20 })
  }

  async getPreferences(did: string): Promise<unknown[]> {
    const row = this.db.prepare('SELECT preferences FROM account WHERE did = ?').get(did) as {
      preferences: string
    }
    return JSON.parse(row.preferences) as unknown[]
  }

  async getAccountState(did: string): Promise<AccountState> {
    const row = this.db.prepare('SELECT state FROM account WHERE did = ?').get(did) as { state: string }
    return JSON.parse(row.state) as AccountState
  }

  async requestPlcToken(did: string): Promise<void> {
    const token = randomBytes(5)
      .toString('hex')
      .toUpperCase()
      .replace(/(.{5})/, '$1-')
    this.db
      .prepare('INSERT OR REPLACE INTO plc_token (did, token, expires_at) VALUES (?, ?, ?)')
      .run(did, token, Date.now() + this.plcTokenTtlMs)
    this.outbox.push({ did, token })
  }

  async consumePlcToken(did: string, token: string): Promise<boolean> {
    const row = this.db.prepare('SELECT token, expires_at FROM plc_token WHERE did = ?').get(did) as
      | { token: string; expires_at: number }
      | undefined
    if (!row || row.expires_at < Date.now() || !sameSecret(row.token, token)) return false
    this.db.prepare('DELETE FROM plc_token WHERE did = ?').run(did)
    return true
  }

  async deactivate(did: string, options: { retainUntil: Date }): Promise<void> {
    this.db
      .prepare("UPDATE account SET status = 'deactivated', retain_until = ? WHERE did = ?")
      .run(options.retainUntil.getTime(), did)
  }

  async reactivate(did: string): Promise<void> {
    this.db.prepare("UPDATE account SET status = 'active', retain_until = NULL WHERE did = ?").run(did)
  }

  /** The repo as one CAR file (for tests comparing both ends). */
  async exportCar(did: string): Promise<Uint8Array> {
    const storage = new SqliteRepoStorage(this.db, did)
    const root = await storage.getRoot()
    const rows = this.db.prepare('SELECT cid, bytes FROM repo_block WHERE did = ?').all(did) as {
      cid: Uint8Array
      bytes: Uint8Array
    }[]
    const blocks = new BlockMap()
    for (const r of rows) blocks.set(decodeCid(r.cid), new Uint8Array(r.bytes))
    return blocksToCarFile(root, blocks)
  }

  blobPath(cid: string): string {
    return join(this.dir, 'blobs', cid)
  }
}

function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest()
  const hb = createHash('sha256').update(b).digest()
  return ha.equals(hb)
}
