import { randomBytes, scryptSync } from 'node:crypto'
import { createWriteStream, type WriteStream } from 'node:fs'
import { readdir, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { Secp256k1Keypair } from '@atproto/crypto'
import type { AccountState } from '@pds-transfer/core'
import {
  type AccountSink,
  type BlobUpload,
  type HeldBlocks,
  ImportFailure,
  type RepoStaging,
  unfinishedName,
  type VerifiedBlock,
  writerGone,
} from '@pds-transfer/destination'
import type { Statement } from 'better-sqlite3'
import { CID } from 'multiformats/cid'
import type { SqliteAccountStore } from './sqlite-account-store.ts'

/**
 * The receiving role of the small SQLite + files PDS: an `AccountSink` over the same database
 * as `SqliteAccountStore`. Staged repo blocks live in their own table until `commitRepo`
 * swaps them in with one transaction; blobs are written to temporary files and renamed into
 * place on commit, so a failed unit leaves nothing behind.
 */
/** Prefix of a blob's temporary file, before `<pid>-<uuid>`. */
const INCOMING = '.incoming-'

export class SqliteAccountSink implements AccountSink {
  /** Stages whose discard failed (e.g. SQLITE_FULL: even a DELETE needs room in the WAL). */
  private readonly leftover = new Set<string>()

  constructor(private readonly store: SqliteAccountStore) {}

  /** Statements run once per blob, prepared once (preparing each time showed in blob profiles). */
  private get statements() {
    this.prepared ??= {
      hasBlob: this.db.prepare('SELECT 1 FROM blob WHERE did = ? AND cid = ?'),
      insertBlob: this.db.prepare('INSERT OR IGNORE INTO blob (did, cid, size) VALUES (?, ?, ?)'),
    }
    return this.prepared
  }
  private prepared: { hasBlob: Statement; insertBlob: Statement } | undefined

  private get db() {
    return this.store.db
  }

  async createDeactivatedAccount(did: string, options: { handle?: string }): Promise<{ signingKey: string }> {
    const row = this.db.prepare('SELECT status, signing_key FROM account WHERE did = ?').get(did) as
      | { status: string; signing_key: string | null }
      | undefined
    if (row) {
      if (row.status === 'active')
        throw new ImportFailure('AccountAlreadyActive', `${did} is an active account here`)
      if (row.signing_key) return { signingKey: (await this.signingKeypair(did)).did() }
    }
    const key = await Secp256k1Keypair.create({ exportable: true })
    const hex = Buffer.from(await key.export()).toString('hex')
    this.db
      .prepare(
        `INSERT INTO account (did, handle, status, signing_key) VALUES (?, ?, 'deactivated', ?)
         ON CONFLICT (did) DO UPDATE SET signing_key = excluded.signing_key`,
      )
      .run(did, options.handle ?? null, hex)
    return { signingKey: key.did() }
  }

  /** The account's repo signing key here (for writes after activation). */
  async signingKeypair(did: string): Promise<Secp256k1Keypair> {
    const row = this.db.prepare('SELECT signing_key FROM account WHERE did = ?').get(did) as
      | { signing_key: string | null }
      | undefined
    if (!row?.signing_key) throw new Error(`no signing key for ${did}`)
    return Secp256k1Keypair.import(Buffer.from(row.signing_key, 'hex'), { exportable: true })
  }

  async isActive(did: string): Promise<boolean> {
    const row = this.db.prepare('SELECT status FROM account WHERE did = ?').get(did) as
      | { status: string }
      | undefined
    return row?.status === 'active'
  }

  async stageRepo(_did: string): Promise<RepoStaging> {
    // Named by this process, so that a later one can tell a dead writer's stage from a live one's.
    const stage = unfinishedName()
    const db = this.db
    const leftover = this.leftover
    // A failed import's blocks are removed once there is room again, before new ones are staged.
    for (const old of leftover) {
      db.prepare('DELETE FROM staged_block WHERE stage = ?').run(old)
      leftover.delete(old)
    }
    const insert = db.prepare('INSERT OR IGNORE INTO staged_block (stage, cid, bytes) VALUES (?, ?, ?)')
    // The repo walk looks up every block once, in random key order: one B-tree (WITHOUT ROWID)
    // and the bare value (pluck) keep that to a single index descent and no row object.
    const select = db.prepare('SELECT bytes FROM staged_block WHERE stage = ? AND cid = ?').pluck()
    return Object.assign(
      {
        async put(blocks: VerifiedBlock[]) {
          db.transaction(() => {
            for (const b of blocks) insert.run(stage, b.cid, b.bytes)
          })()
        },
        async get(cid: Uint8Array) {
          const bytes = select.get(stage, cid) as Uint8Array | undefined
          return bytes && new Uint8Array(bytes)
        },
        async discard() {
          try {
            db.prepare('DELETE FROM staged_block WHERE stage = ?').run(stage)
          } catch (err) {
            leftover.add(stage)
            throw err
          }
        },
      },
      { stage },
    )
  }

  async openRepoBlocks(did: string): Promise<HeldBlocks> {
    const select = this.db.prepare('SELECT bytes FROM repo_block WHERE did = ? AND cid = ?').pluck()
    return {
      async get(cid) {
        const bytes = select.get(did, cid) as Uint8Array | undefined
        return bytes && new Uint8Array(bytes)
      },
      async close() {},
    }
  }

  async commitRepo(
    did: string,
    staging: RepoStaging,
    head: { commitCid: string; rev: string },
  ): Promise<void> {
    const { stage } = staging as RepoStaging & { stage: string }
    const commitCid = CID.parse(head.commitCid).bytes
    if (!this.db.prepare('SELECT 1 FROM staged_block WHERE stage = ? AND cid = ?').get(stage, commitCid)) {
      throw new Error(`commit ${head.commitCid} is not staged`)
    }
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM repo_block WHERE did = ?').run(did)
      this.db
        .prepare(
          'INSERT INTO repo_block (did, cid, bytes, rev) SELECT ?, cid, bytes, ? FROM staged_block WHERE stage = ?',
        )
        .run(did, head.rev, stage)
      this.db
        .prepare(
          'INSERT INTO repo_root (did, commit_cid, rev) VALUES (?, ?, ?) ON CONFLICT (did) DO UPDATE SET commit_cid = excluded.commit_cid, rev = excluded.rev',
        )
        .run(did, commitCid, head.rev)
      this.db.prepare('DELETE FROM staged_block WHERE stage = ?').run(stage)
    })()
  }

  async startBlob(did: string, cid: string, size: number): Promise<BlobUpload> {
    const temp = join(this.store.dir, 'blobs', `${INCOMING}${unfinishedName()}`)
    // A 1 MiB buffer lets writes of decrypted chunks queue up while the next ones are decrypted
    // and hashed: with the default 16 KiB every 64 KiB chunk waited for its own disk write.
    const out: WriteStream = createWriteStream(temp, { highWaterMark: 1 << 20 })
    // An abort destroys the stream under a pending write; keep its error for the caller instead
    // of letting an unheard 'error' event take the process down.
    let failure: Error | undefined
    out.on('error', (err) => {
      failure ??= err
    })
    const closed = () =>
      new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())))
    const drained = () =>
      new Promise<void>((resolve, reject) => {
        const done = () => {
          out.off('drain', done)
          out.off('close', done)
          if (failure) reject(failure)
          else resolve()
        }
        out.once('drain', done)
        out.once('close', done)
      })
    let written = 0
    /** Closing starts as soon as the declared bytes are in, overlapping the next blob's data. */
    let closing: Promise<void> | undefined
    return {
      write: async (chunk) => {
        if (failure) throw failure
        written += chunk.length
        // Waiting for the drain bounds what waits for the disk to one buffer (1 MiB) per blob.
        if (!out.write(chunk)) await drained()
        // A closed temporary file is still nothing but staging: only commit renames it in.
        if (size >= 0 && written >= size) {
          closing ??= closed()
          // Handled by commit or abort; here only kept from being an unhandled rejection.
          closing.catch(() => {})
        }
      },
      commit: async () => {
        if (failure) throw failure
        await (closing ?? closed())
        if (size >= 0 && written !== size) throw new Error(`blob ${cid}: ${written} bytes, ${size} declared`)
        await rename(temp, this.store.blobPath(cid))
        this.statements.insertBlob.run(did, cid, written)
      },
      abort: async () => {
        out.destroy()
        // A stream destroyed before its file finished opening still creates it: wait, then remove.
        // (Not events.once: it rejects on the 'error' a destroyed pending write emits first.)
        if (!out.closed) await new Promise<void>((resolve) => out.once('close', () => resolve()))
        await rm(temp, { force: true })
      },
    }
  }

  /**
   * Removes the temporary blob files and staged blocks of writers that are gone (a process
   * killed mid-write: its pid, in their names, is no longer running). Those of this process and
   * of other live ones are left alone.
   */
  async sweepUnfinished(): Promise<number> {
    let removed = 0
    const dir = join(this.store.dir, 'blobs')
    for (const name of await readdir(dir)) {
      if (!name.startsWith(INCOMING) || !writerGone(name.slice(INCOMING.length))) continue
      await rm(join(dir, name), { force: true })
      removed++
    }
    const stages = this.db.prepare('SELECT DISTINCT stage FROM staged_block').pluck().all() as string[]
    for (const stage of stages) {
      if (!writerGone(stage)) continue
      this.db.prepare('DELETE FROM staged_block WHERE stage = ?').run(stage)
      removed++
    }
    return removed
  }

  async hasBlob(did: string, cid: string): Promise<boolean> {
    return this.statements.hasBlob.get(did, cid) !== undefined
  }

  async putPreferences(did: string, preferences: unknown[]): Promise<void> {
    this.db.prepare('UPDATE account SET preferences = ? WHERE did = ?').run(JSON.stringify(preferences), did)
  }

  async putAccountState(did: string, state: AccountState): Promise<void> {
    this.db.prepare('UPDATE account SET state = ? WHERE did = ?').run(JSON.stringify(state), did)
  }

  async setPassword(did: string, password: string): Promise<void> {
    const salt = randomBytes(16)
    this.db
      .prepare('INSERT OR REPLACE INTO account_password (did, salt, hash) VALUES (?, ?, ?)')
      .run(did, salt, scryptSync(password, salt, 64))
  }

  async activate(did: string): Promise<void> {
    this.db.prepare("UPDATE account SET status = 'active', retain_until = NULL WHERE did = ?").run(did)
  }
}
