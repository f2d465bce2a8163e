import Database from 'better-sqlite3'
import type { InboundTransfer, InboundTransferStore } from './inbound-transfer.ts'

/**
 * SQLite `InboundTransferStore`: one row per transfer, the record as JSON beside the columns
 * the queries need. Pass a file path to persist across restarts, or ':memory:'.
 */
export class SqliteInboundTransferStore implements InboundTransferStore {
  private readonly db: Database.Database

  constructor(path: string) {
    this.db = new Database(path)
    this.db.pragma('journal_mode = WAL')
    this.db.exec(`CREATE TABLE IF NOT EXISTS inbound_transfer (
      transfer_id TEXT PRIMARY KEY,
      did TEXT NOT NULL,
      status TEXT NOT NULL,
      watch_until INTEGER,
      record TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS inbound_transfer_blob (
      transfer_id TEXT NOT NULL,
      cid TEXT NOT NULL,
      PRIMARY KEY (transfer_id, cid)
    ) WITHOUT ROWID`)
  }

  close(): void {
    this.db.close()
  }

  async create(transfer: InboundTransfer): Promise<void> {
    this.db
      .prepare(
        'INSERT INTO inbound_transfer (transfer_id, did, status, watch_until, record) VALUES (?, ?, ?, ?, ?)',
      )
      .run(
        transfer.transferId,
        transfer.did,
        transfer.status,
        transfer.watchUntil ?? null,
        JSON.stringify(transfer),
      )
  }

  async get(transferId: string): Promise<InboundTransfer | undefined> {
    const row = this.db
      .prepare('SELECT record FROM inbound_transfer WHERE transfer_id = ?')
      .get(transferId) as { record: string } | undefined
    return row && (JSON.parse(row.record) as InboundTransfer)
  }

  async update(
    transferId: string,
    changes: Partial<Omit<InboundTransfer, 'transferId' | 'did' | 'createdAt'>>,
  ): Promise<InboundTransfer> {
    return this.db.transaction(() => {
      const row = this.db
        .prepare('SELECT record FROM inbound_transfer WHERE transfer_id = ?')
        .get(transferId) as { record: string } | undefined
      if (!row) throw new Error(`no transfer ${transferId}`)
      const next: InboundTransfer = {
        ...(JSON.parse(row.record) as InboundTransfer),
        ...changes,
        updatedAt: Date.now(),
      }
      this.db
        .prepare('UPDATE inbound_transfer SET status = ?, watch_until = ?, record = ? WHERE transfer_id = ?')
        .run(next.status, next.watchUntil ?? null, JSON.stringify(next), transferId)
      return next
    })()
  }

  async listActive(): Promise<InboundTransfer[]> {
    return this.rows("SELECT record FROM inbound_transfer WHERE status NOT IN ('completed', 'failed')")
  }

  async listWatched(now: number): Promise<InboundTransfer[]> {
    return this.rows(
      "SELECT record FROM inbound_transfer WHERE status = 'completed' AND watch_until > ?",
      now,
    )
  }

  async putReferencedBlobs(transferId: string, cids: Iterable<string>): Promise<void> {
    const insert = this.db.prepare(
      'INSERT OR IGNORE INTO inbound_transfer_blob (transfer_id, cid) VALUES (?, ?)',
    )
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM inbound_transfer_blob WHERE transfer_id = ?').run(transferId)
      for (const cid of cids) insert.run(transferId, cid)
    })()
  }

  async getReferencedBlobs(transferId: string): Promise<string[]> {
    const rows = this.db
      .prepare('SELECT cid FROM inbound_transfer_blob WHERE transfer_id = ? ORDER BY cid')
      .all(transferId) as { cid: string }[]
    return rows.map((r) => r.cid)
  }

  private rows(sql: string, ...params: unknown[]): InboundTransfer[] {
    const rows = this.db.prepare(sql).all(...params) as { record: string }[]
    return rows.map((r) => JSON.parse(r.record) as InboundTransfer)
  }
}
