import { createReadStream } from 'node:fs'
import { TID } from '@atproto/common-web'
import type { Keypair } from '@atproto/crypto'
import { decode, encode } from '@atproto/lex-cbor'
import { cidForCbor, enumBlobRefs, getBlobCid, type LexMap } from '@atproto/lex-data'
import {
  type CommitSigner,
  parseSpaceRef,
  type SpaceRecordBlock,
  SpaceSetHash,
  setHashElement,
} from '@pds-transfer/core'
import type { PermissionedDataSink, SimpleSpaceState } from '@pds-transfer/destination'
import type {
  MemberPage,
  PermissionedRepoHost,
  SimpleSpace,
  SimpleSpaceHost,
  SpaceBlobPage,
  SpacePage,
  SpaceRepoHead,
} from '@pds-transfer/source'
import type { SqliteAccountStore } from './sqlite-account-store.ts'

const SCHEMA = `
CREATE TABLE IF NOT EXISTS space_repo (
  space TEXT NOT NULL, did TEXT NOT NULL, authority TEXT NOT NULL, type TEXT NOT NULL,
  rev TEXT NOT NULL, set_hash BLOB NOT NULL, PRIMARY KEY (space, did)
);
CREATE TABLE IF NOT EXISTS space_record (
  space TEXT NOT NULL, did TEXT NOT NULL, collection TEXT NOT NULL, rkey TEXT NOT NULL,
  cid TEXT NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (space, did, collection, rkey)
);
CREATE TABLE IF NOT EXISTS space_record_blob (
  space TEXT NOT NULL, did TEXT NOT NULL, record TEXT NOT NULL, cid TEXT NOT NULL, PRIMARY KEY (space, did, record, cid)
);
CREATE TABLE IF NOT EXISTS simplespace (uri TEXT PRIMARY KEY, policy TEXT NOT NULL, app_access TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS simplespace_member (uri TEXT NOT NULL, did TEXT NOT NULL, PRIMARY KEY (uri, did));
`

/** A write to a permissioned repo: a record to create or replace, or (without `record`) a delete. */
export interface SpaceRecordWrite {
  collection: string
  rkey: string
  record?: LexMap
}

/**
 * Permissioned data (proposal 0016) in the SQLite test PDS, in the account store's database and
 * blob files: the repo-host role (`PermissionedRepoHost`), the simplespace space-host role
 * (`SimpleSpaceHost`) and, as a destination, the `PermissionedDataSink` a move fills. Each repo
 * keeps its 2048-byte set-hash state, updated in the same transaction as its records.
 */
export class SqliteSpaceStore implements PermissionedRepoHost, SimpleSpaceHost, PermissionedDataSink {
  private readonly keys = new Map<string, Keypair>()

  constructor(private readonly accounts: SqliteAccountStore) {
    accounts.db.exec(SCHEMA)
    // A blob only permissioned records reference is served by com.atproto.space.getBlob with a
    // credential, never by the public sync.getBlob to whoever knows its CID.
    const onlyPermissioned = accounts.db.prepare(
      `SELECT 1 FROM space_record_blob s WHERE s.did = ? AND s.cid = ?
       AND NOT EXISTS (SELECT 1 FROM record_blob r WHERE r.did = s.did AND r.cid = s.cid) LIMIT 1`,
    )
    accounts.hidePrivateBlobs((did, cid) => onlyPermissioned.get(did, cid) !== undefined)
  }

  private get db() {
    return this.accounts.db
  }

  /** The account's `#atproto` signing key, used to sign commits as they are read. */
  setSigningKey(did: string, key: Keypair): void {
    this.keys.set(did, key)
  }

  signer(did: string): CommitSigner | undefined {
    return this.keys.get(did)
  }

  /** Applies writes to `did`'s repo in `space` in one transaction; returns the new rev. */
  async writeRecords(did: string, space: string, writes: SpaceRecordWrite[]): Promise<string> {
    const encoded = await Promise.all(
      writes.map(async (w) => {
        if (!w.record) return { ...w, block: undefined }
        const bytes = encode(w.record)
        return { ...w, block: { cid: (await cidForCbor(bytes)).toString(), bytes } }
      }),
    )
    const ref = parseSpaceRef(space)
    return this.db.transaction(() => {
      const head = this.head(space, did)
      const setHash = new SpaceSetHash(head?.state)
      for (const w of encoded) {
        const path = `${w.collection}/${w.rkey}`
        const old = this.db
          .prepare('SELECT cid FROM space_record WHERE space = ? AND did = ? AND collection = ? AND rkey = ?')
          .get(space, did, w.collection, w.rkey) as { cid: string } | undefined
        if (old) setHash.remove(setHashElement(w.collection, w.rkey, old.cid))
        this.db
          .prepare('DELETE FROM space_record WHERE space = ? AND did = ? AND collection = ? AND rkey = ?')
          .run(space, did, w.collection, w.rkey)
        this.db
          .prepare('DELETE FROM space_record_blob WHERE space = ? AND did = ? AND record = ?')
          .run(space, did, path)
        if (!w.block || !w.record) continue
        setHash.add(setHashElement(w.collection, w.rkey, w.block.cid))
        this.db
          .prepare(
            'INSERT INTO space_record (space, did, collection, rkey, cid, bytes) VALUES (?, ?, ?, ?, ?, ?)',
          )
          .run(space, did, w.collection, w.rkey, w.block.cid, w.block.bytes)
        for (const blobRef of enumBlobRefs(w.record)) {
          const cid = getBlobCid(blobRef).toString()
          this.db
            .prepare('INSERT OR IGNORE INTO space_record_blob (space, did, record, cid) VALUES (?, ?, ?, ?)')
            .run(space, did, path, cid)
        }
      }
      // Revs only grow: syncers compare them.
      const rev = TID.nextStr(head?.rev)
      this.db
        .prepare(
          `INSERT INTO space_repo (space, did, authority, type, rev, set_hash) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (space, did) DO UPDATE SET rev = excluded.rev, set_hash = excluded.set_hash`,
        )
        .run(space, did, ref.authority, ref.type, rev, setHash.state())
      return rev
    })()
  }

  /**
   * Stores blob bytes in the account's blob store (as `com.atproto.repo.uploadBlob` does, which is
   * how 0016 has space records get blobs); a record's blob ref makes its repo serve it.
   */
  async putBlob(did: string, bytes: Uint8Array): Promise<string> {
    return (await this.accounts.putBlob(did, bytes)).toString()
  }

  // --- PermissionedRepoHost ---

  async listSpaces(
    did: string,
    options: { type?: string; authority?: string; limit: number; cursor?: string },
  ): Promise<SpacePage> {
    const rows = this.db
      .prepare(
        `SELECT space FROM space_repo WHERE did = @did AND space > @cursor
         AND (@type IS NULL OR type = @type) AND (@authority IS NULL OR authority = @authority)
         ORDER BY space LIMIT @limit`,
      )
      .all({
        did,
        cursor: options.cursor ?? '',
        type: options.type ?? null,
        authority: options.authority ?? null,
        limit: options.limit,
      }) as { space: string }[]
    const spaces = rows.map((r) => r.space)
    const last = spaces.at(-1)
    return { spaces, ...(spaces.length === options.limit && last && { cursor: last }) }
  }

  async repoHead(space: string, did: string): Promise<SpaceRepoHead | undefined> {
    const head = this.head(space, did)
    return head && { rev: head.rev, hash: new SpaceSetHash(head.state).digest() }
  }

  async readRepo(
    space: string,
    did: string,
  ): Promise<(SpaceRepoHead & { records: SpaceRecordBlock[] }) | undefined> {
    // One transaction: the head and the records are one state even while writes go on.
    return this.db.transaction(() => {
      const head = this.head(space, did)
      if (!head) return undefined
      const rows = this.db
        .prepare('SELECT collection, rkey, cid, bytes FROM space_record WHERE space = ? AND did = ?')
        .all(space, did) as { collection: string; rkey: string; cid: string; bytes: Buffer }[]
      const records = rows.map((r) => ({ ...r, bytes: new Uint8Array(r.bytes) }))
      return { rev: head.rev, hash: new SpaceSetHash(head.state).digest(), records }
    })()
  }

  async listBlobs(
    space: string,
    did: string,
    options: { limit: number; cursor?: string },
  ): Promise<SpaceBlobPage | undefined> {
    if (!this.head(space, did)) return undefined
    const rows = this.db
      .prepare(
        `SELECT DISTINCT cid FROM space_record_blob WHERE space = ? AND did = ? AND cid > ? ORDER BY cid LIMIT ?`,
      )
      .all(space, did, options.cursor ?? '', options.limit) as { cid: string }[]
    const cids = rows.map((r) => r.cid)
    const last = cids.at(-1)
    return { cids, ...(cids.length === options.limit && last && { cursor: last }) }
  }

  async openBlob(space: string, did: string, cid: string) {
    const row = this.db
      .prepare(
        `SELECT b.size FROM space_record_blob r JOIN blob b ON b.did = r.did AND b.cid = r.cid
         WHERE r.space = ? AND r.did = ? AND r.cid = ? LIMIT 1`,
      )
      .get(space, did, cid) as { size: number } | undefined
    if (!row) return undefined
    return { size: row.size, bytes: createReadStream(this.accounts.blobPath(cid)) }
  }

  // --- SimpleSpaceHost ---

  async createSpace(space: SimpleSpace): Promise<boolean> {
    const ref = parseSpaceRef(space.uri)
    return this.db.transaction(() => {
      const result = this.db
        .prepare('INSERT OR IGNORE INTO simplespace (uri, policy, app_access) VALUES (?, ?, ?)')
        .run(space.uri, JSON.stringify(space.policy), JSON.stringify(space.appAccess))
      if (result.changes !== 1) return false
      // The owner holds an (empty) repo from the start, so listSpaces names the space before any
      // write, as the alpha PDS's ensureSpace does: how a move finds the spaces a user owns.
      this.db
        .prepare(
          'INSERT OR IGNORE INTO space_repo (space, did, authority, type, rev, set_hash) VALUES (?, ?, ?, ?, ?, ?)',
        )
        .run(space.uri, ref.authority, ref.authority, ref.type, TID.nextStr(), new SpaceSetHash().state())
      return true
    })()
  }

  async getSpace(uri: string): Promise<SimpleSpace | undefined> {
    const row = this.db.prepare('SELECT policy, app_access FROM simplespace WHERE uri = ?').get(uri) as
      | { policy: string; app_access: string }
      | undefined
    return row && { uri, policy: JSON.parse(row.policy), appAccess: JSON.parse(row.app_access) }
  }

  async updateSpace(
    uri: string,
    patch: Partial<Pick<SimpleSpace, 'policy' | 'appAccess'>>,
  ): Promise<boolean> {
    const result = this.db
      .prepare(
        'UPDATE simplespace SET policy = coalesce(?, policy), app_access = coalesce(?, app_access) WHERE uri = ?',
      )
      .run(
        patch.policy ? JSON.stringify(patch.policy) : null,
        patch.appAccess ? JSON.stringify(patch.appAccess) : null,
        uri,
      )
    return result.changes === 1
  }

  async addMember(uri: string, did: string): Promise<boolean> {
    if (!(await this.getSpace(uri))) return false
    this.db.prepare('INSERT OR IGNORE INTO simplespace_member (uri, did) VALUES (?, ?)').run(uri, did)
    return true
  }

  async removeMember(uri: string, did: string): Promise<boolean> {
    if (!(await this.getSpace(uri))) return false
    this.db.prepare('DELETE FROM simplespace_member WHERE uri = ? AND did = ?').run(uri, did)
    return true
  }

  async listMembers(
    uri: string,
    options: { limit: number; cursor?: string },
  ): Promise<MemberPage | undefined> {
    if (!(await this.getSpace(uri))) return undefined
    const rows = this.db
      .prepare('SELECT did FROM simplespace_member WHERE uri = ? AND did > ? ORDER BY did LIMIT ?')
      .all(uri, options.cursor ?? '', options.limit) as { did: string }[]
    const members = rows.map((r) => r.did)
    const last = members.at(-1)
    return { members, ...(members.length === options.limit && last && { cursor: last }) }
  }

  async isMember(uri: string, did: string): Promise<boolean> {
    return (
      this.db.prepare('SELECT 1 FROM simplespace_member WHERE uri = ? AND did = ?').get(uri, did) !==
      undefined
    )
  }

  // --- PermissionedDataSink ---

  async importSpaceRepo(
    did: string,
    space: string,
    repo: { rev: string; hash: Uint8Array; records: SpaceRecordBlock[] },
  ): Promise<void> {
    const ref = parseSpaceRef(space)
    const setHash = new SpaceSetHash()
    for (const r of repo.records) setHash.add(setHashElement(r.collection, r.rkey, r.cid))
    if (!Buffer.from(setHash.digest()).equals(repo.hash))
      throw new Error(`the records of ${did} in ${space} do not hash to the commit they came with`)
    this.db.transaction(() => {
      for (const table of ['space_record', 'space_record_blob'])
        this.db.prepare(`DELETE FROM ${table} WHERE space = ? AND did = ?`).run(space, did)
      for (const r of repo.records) {
        this.db
          .prepare(
            'INSERT INTO space_record (space, did, collection, rkey, cid, bytes) VALUES (?, ?, ?, ?, ?, ?)',
          )
          .run(space, did, r.collection, r.rkey, r.cid, r.bytes)
        for (const blobRef of enumBlobRefs(decode(r.bytes)))
          this.db
            .prepare('INSERT OR IGNORE INTO space_record_blob (space, did, record, cid) VALUES (?, ?, ?, ?)')
            .run(space, did, `${r.collection}/${r.rkey}`, getBlobCid(blobRef).toString())
      }
      this.db
        .prepare(
          `INSERT INTO space_repo (space, did, authority, type, rev, set_hash) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (space, did) DO UPDATE SET rev = excluded.rev, set_hash = excluded.set_hash`,
        )
        .run(space, did, ref.authority, ref.type, repo.rev, setHash.state())
    })()
  }

  async importSimpleSpace(state: SimpleSpaceState): Promise<void> {
    this.db.transaction(() => {
      this.db
        .prepare(
          `INSERT INTO simplespace (uri, policy, app_access) VALUES (?, ?, ?)
           ON CONFLICT (uri) DO UPDATE SET policy = excluded.policy, app_access = excluded.app_access`,
        )
        .run(state.uri, JSON.stringify(state.policy), JSON.stringify(state.appAccess))
      this.db.prepare('DELETE FROM simplespace_member WHERE uri = ?').run(state.uri)
      const add = this.db.prepare('INSERT OR IGNORE INTO simplespace_member (uri, did) VALUES (?, ?)')
      for (const did of state.members) add.run(state.uri, did)
    })()
  }

  private head(space: string, did: string): { rev: string; state: Uint8Array } | undefined {
    const row = this.db
      .prepare('SELECT rev, set_hash FROM space_repo WHERE space = ? AND did = ?')
      .get(space, did) as { rev: string; set_hash: Buffer } | undefined
    return row && { rev: row.rev, state: new Uint8Array(row.set_hash) }
  }
}
