import type { NodeSavedSession, NodeSavedState } from '@atproto/oauth-client-node'
import Database from 'better-sqlite3'

/** A `SimpleStore` of JSON values in one table of a SQLite file. */
class SqliteJsonStore<V> {
  constructor(
    private readonly db: Database.Database,
    private readonly kind: string,
  ) {}

  async get(key: string): Promise<V | undefined> {
    const row = this.db
      .prepare('SELECT value FROM oauth_store WHERE kind = ? AND key = ?')
      .get(this.kind, key) as { value: string } | undefined
    return row && (JSON.parse(row.value) as V)
  }

  async set(key: string, value: V): Promise<void> {
    this.db
      .prepare(
        'INSERT INTO oauth_store (kind, key, value, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at',
      )
      .run(this.kind, key, JSON.stringify(value), Date.now())
  }

  async del(key: string): Promise<void> {
    this.db.prepare('DELETE FROM oauth_store WHERE kind = ? AND key = ?').run(this.kind, key)
  }
}

/**
 * Durable OAuth client state for the destination: pending authorizations (`state`) and the
 * sessions at each source (per account DID, with their DPoP keys). Durable so that a restarted
 * destination can resume a transfer and complete it with the same grant (`restoreClient`).
 */
export class SqliteOAuthStore {
  private readonly db: Database.Database
  readonly states: SqliteJsonStore<NodeSavedState>
  readonly sessions: SqliteJsonStore<NodeSavedSession>
  /** Our client-authentication key (private JWK) when we are a confidential client. */
  readonly clientKeys: SqliteJsonStore<Record<string, unknown>>

  constructor(path: string) {
    this.db = new Database(path)
    this.db.pragma('journal_mode = WAL')
    this.db.exec(
      'CREATE TABLE IF NOT EXISTS oauth_store (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (kind, key))',
    )
    this.states = new SqliteJsonStore(this.db, 'state')
    this.sessions = new SqliteJsonStore(this.db, 'session')
    this.clientKeys = new SqliteJsonStore(this.db, 'client-key')
  }

  /** Drops authorizations never completed (the user left at the source's consent page). */
  pruneStates(olderThanMs: number): void {
    this.db
      .prepare("DELETE FROM oauth_store WHERE kind = 'state' AND updated_at < ?")
      .run(Date.now() - olderThanMs)
  }

  close(): void {
    this.db.close()
  }
}
