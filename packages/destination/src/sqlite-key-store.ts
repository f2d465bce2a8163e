import type { TransferPrivateJwk } from '@pds-transfer/core'
import Database from 'better-sqlite3'
import type { KeyStore } from './key-ring.ts'

/** SQLite `KeyStore`. The file holds private keys: keep it as private as the PDS's signing keys. */
export class SqliteKeyStore implements KeyStore {
  private readonly db: Database.Database

  constructor(path: string) {
    this.db = new Database(path)
    this.db.exec('CREATE TABLE IF NOT EXISTS transfer_key (kid TEXT PRIMARY KEY, jwk TEXT NOT NULL)')
  }

  close(): void {
    this.db.close()
  }

  async list(): Promise<TransferPrivateJwk[]> {
    const rows = this.db.prepare('SELECT jwk FROM transfer_key ORDER BY kid').all() as { jwk: string }[]
    return rows.map((r) => JSON.parse(r.jwk) as TransferPrivateJwk)
  }

  async put(key: TransferPrivateJwk): Promise<void> {
    this.db.prepare('INSERT INTO transfer_key (kid, jwk) VALUES (?, ?)').run(key.kid, JSON.stringify(key))
  }

  async remove(kid: string): Promise<void> {
    this.db.prepare('DELETE FROM transfer_key WHERE kid = ?').run(kid)
  }
}
