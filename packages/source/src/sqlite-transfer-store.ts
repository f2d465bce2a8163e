import Database from 'better-sqlite3'
import type {
  SourceCompletion,
  SourceTransfer,
  SourceTransferStore,
  TransferStatus,
} from './transfer-store.ts'

interface Row {
  transfer_id: string
  did: string
  client_id: string
  algorithm: string
  status: TransferStatus
  exported_rev: string | null
  frames_sent: number
  bytes_sent: number
  blobs_sent: number
  error: string | null
  completion: string | null
  token_failures: number
  created_at: number
  updated_at: number
}

const COLUMNS: Record<string, keyof Row> = {
  clientId: 'client_id',
  algorithm: 'algorithm',
  status: 'status',
  exportedRev: 'exported_rev',
  framesSent: 'frames_sent',
  bytesSent: 'bytes_sent',
  blobsSent: 'blobs_sent',
  error: 'error',
  completion: 'completion',
  tokenFailures: 'token_failures',
  updatedAt: 'updated_at',
}

const ACTIVE = "status NOT IN ('completed', 'failed')"

/** SQLite `SourceTransferStore`; pass a file path to persist, or ':memory:'. */
export class SqliteTransferStore implements SourceTransferStore {
  private readonly db: Database.Database

  constructor(path: string) {
    this.db = new Database(path)
    this.db.pragma('journal_mode = WAL')
    this.db.exec(`CREATE TABLE IF NOT EXISTS source_transfer (
      transfer_id TEXT PRIMARY KEY,
      did TEXT NOT NULL,
      client_id TEXT NOT NULL,
      algorithm TEXT NOT NULL,
      status TEXT NOT NULL,
      exported_rev TEXT,
      frames_sent INTEGER NOT NULL DEFAULT 0,
      bytes_sent INTEGER NOT NULL DEFAULT 0,
      blobs_sent INTEGER NOT NULL DEFAULT 0,
      error TEXT,
      created_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS source_transfer_did ON source_transfer (did);
    CREATE INDEX IF NOT EXISTS source_transfer_client ON source_transfer (client_id, created_at);`)
    // Columns added after the first release: a store from then gains them in place.
    const columns = new Set(
      (this.db.prepare('PRAGMA table_info(source_transfer)').all() as { name: string }[]).map((c) => c.name),
    )
    if (!columns.has('completion')) this.db.exec('ALTER TABLE source_transfer ADD COLUMN completion TEXT')
    if (!columns.has('token_failures')) {
      this.db.exec('ALTER TABLE source_transfer ADD COLUMN token_failures INTEGER NOT NULL DEFAULT 0')
    }
  }

  async create(t: SourceTransfer): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO source_transfer (transfer_id, did, client_id, algorithm, status, exported_rev, frames_sent,
         bytes_sent, blobs_sent, error, completion, token_failures, created_at, updated_at)
         VALUES (@transferId, @did, @clientId, @algorithm, @status, @exportedRev, @framesSent, @bytesSent,
         @blobsSent, @error, @completion, @tokenFailures, @createdAt, @updatedAt)`,
      )
      .run({
        exportedRev: null,
        error: null,
        ...t,
        completion: t.completion ? JSON.stringify(t.completion) : null,
        tokenFailures: t.tokenFailures ?? 0,
      })
  }

  async get(transferId: string): Promise<SourceTransfer | undefined> {
    const row = this.db.prepare('SELECT * FROM source_transfer WHERE transfer_id = ?').get(transferId) as
      | Row
      | undefined
    return row && fromRow(row)
  }

  async findActive(did: string): Promise<SourceTransfer | undefined> {
    const row = this.db
      .prepare(`SELECT * FROM source_transfer WHERE did = ? AND ${ACTIVE} ORDER BY created_at DESC LIMIT 1`)
      .get(did) as Row | undefined
    return row && fromRow(row)
  }

  async update(transferId: string, changes: Partial<SourceTransfer>): Promise<void> {
    const entries = Object.entries(changes).filter(([k]) => k in COLUMNS)
    if (entries.length === 0) return
    const set = entries.map(([k]) => `${COLUMNS[k]} = @${k}`).join(', ')
    this.db
      .prepare(`UPDATE source_transfer SET ${set} WHERE transfer_id = @transferId`)
      .run({ ...Object.fromEntries(entries.map(([k, v]) => [k, toColumn(k, v)])), transferId })
  }

  async countCreatedSince(clientId: string, since: number): Promise<number> {
    const row = this.db
      .prepare('SELECT count(*) AS n FROM source_transfer WHERE client_id = ? AND created_at >= ?')
      .get(clientId, since) as { n: number }
    return row.n
  }

  async listStale(before: number): Promise<SourceTransfer[]> {
    const rows = this.db
      .prepare(`SELECT * FROM source_transfer WHERE updated_at < ? AND ${ACTIVE}`)
      .all(before) as Row[]
    return rows.map(fromRow)
  }

  async listUnsettled(before: number): Promise<SourceTransfer[]> {
    const rows = this.db
      .prepare(
        // Any status: a move paused for a catch-up export is `exporting`, `importing` or (its
        // destination gone mid-export) `failed`, and must be taken back as well.
        `SELECT * FROM source_transfer
         WHERE json_extract(completion, '$.deactivatedAt') < ? AND json_extract(completion, '$.settledAt') IS NULL`,
      )
      .all(before) as Row[]
    return rows.map(fromRow)
  }

  close(): void {
    this.db.close()
  }
}

function toColumn(key: string, value: unknown): unknown {
  if (key === 'completion') return value === undefined ? null : JSON.stringify(value)
  if (key === 'tokenFailures') return value ?? 0
  return value ?? null
}

function fromRow(r: Row): SourceTransfer {
  return {
    transferId: r.transfer_id,
    did: r.did,
    clientId: r.client_id,
    algorithm: r.algorithm,
    status: r.status,
    ...(r.exported_rev !== null && { exportedRev: r.exported_rev }),
    framesSent: r.frames_sent,
    bytesSent: r.bytes_sent,
    blobsSent: r.blobs_sent,
    ...(r.error !== null && { error: r.error }),
    ...(r.completion !== null && { completion: JSON.parse(r.completion) as SourceCompletion }),
    tokenFailures: r.token_failures,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  }
}
