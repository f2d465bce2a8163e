import Database from 'better-sqlite3'
import { EngineError } from './engine-error.ts'
import {
  type AdmissionLimits,
  type AdmissionRefusal,
  IN_FLIGHT_STAGES,
  type InboundTransfer,
  type InboundTransferStore,
} from './inbound-transfer.ts'

/** SQL condition: the row's transfer is in flight. */
const IN_FLIGHT = `stage IN (${[...IN_FLIGHT_STAGES].map((s) => `'${s}'`).join(', ')})`

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
    // Columns of the admission rules, added after the first release: a store from then gains
    // them in place, filled from its records (the source normalized as the engine does).
    const columns = new Set(
      (this.db.prepare('PRAGMA table_info(inbound_transfer)').all() as { name: string }[]).map((c) => c.name),
    )
    if (!columns.has('stage')) {
      this.db.exec(`ALTER TABLE inbound_transfer ADD COLUMN stage TEXT NOT NULL DEFAULT '';
        ALTER TABLE inbound_transfer ADD COLUMN source TEXT NOT NULL DEFAULT '';
        UPDATE inbound_transfer SET stage = json_extract(record, '$.stage'),
          source = lower(rtrim(json_extract(record, '$.sourceUrl'), '/'))`)
    }
    // The DID rule as a constraint too: no code path can put a second transfer of a DID in flight.
    this.db.exec(`CREATE UNIQUE INDEX IF NOT EXISTS inbound_transfer_in_flight_did
      ON inbound_transfer (did) WHERE ${IN_FLIGHT};
    CREATE INDEX IF NOT EXISTS inbound_transfer_in_flight_source
      ON inbound_transfer (source) WHERE ${IN_FLIGHT}`)
  }

  close(): void {
    this.db.close()
  }

  async create(transfer: InboundTransfer, limits: AdmissionLimits): Promise<AdmissionRefusal | undefined> {
    // IMMEDIATE takes the write lock before the checks: another connection cannot insert between.
    return this.db
      .transaction((): AdmissionRefusal | undefined => {
        if (
          this.db.prepare(`SELECT 1 FROM inbound_transfer WHERE did = ? AND ${IN_FLIGHT}`).get(transfer.did)
        ) {
          return { refused: 'DidInFlight' }
        }
        const { inFlight } = this.db
          .prepare(`SELECT count(*) AS inFlight FROM inbound_transfer WHERE source = ? AND ${IN_FLIGHT}`)
          .get(limits.source) as { inFlight: number }
        if (inFlight >= limits.maxPerSource) return { refused: 'SourceLimit', inFlight }
        this.db
          .prepare(
            `INSERT INTO inbound_transfer (transfer_id, did, source, status, stage, watch_until, record)
             VALUES (?, ?, ?, ?, ?, ?, ?)`,
          )
          .run(
            transfer.transferId,
            transfer.did,
            limits.source,
            transfer.status,
            transfer.stage,
            transfer.watchUntil ?? null,
            JSON.stringify(transfer),
          )
        return undefined
      })
      .immediate()
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
      try {
        this.db
          .prepare(
            'UPDATE inbound_transfer SET status = ?, stage = ?, watch_until = ?, record = ? WHERE transfer_id = ?',
          )
          .run(next.status, next.stage, next.watchUntil ?? null, JSON.stringify(next), transferId)
      } catch (err) {
        if ((err as { code?: unknown }).code === 'SQLITE_CONSTRAINT_UNIQUE') {
          throw new EngineError('InvalidState', `${next.did} has another transfer in flight`)
        }
        throw err
      }
      return next
    })()
  }

  async listActive(): Promise<InboundTransfer[]> {
    return this.rows("SELECT record FROM inbound_transfer WHERE status NOT IN ('completed', 'failed')")
  }

  async listForDid(did: string): Promise<InboundTransfer[]> {
    return this.rows(
      "SELECT record FROM inbound_transfer WHERE did = ? ORDER BY json_extract(record, '$.createdAt') DESC",
      did,
    )
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
