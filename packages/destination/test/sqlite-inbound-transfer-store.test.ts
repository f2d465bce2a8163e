import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterEach, describe, expect, it } from 'vitest'
import { EngineError } from '../src/engine-error.ts'
import { emptyProgress, type InboundTransfer } from '../src/inbound-transfer.ts'
import { SqliteInboundTransferStore } from '../src/sqlite-inbound-transfer-store.ts'

const SOURCE = 'https://source.example'

const transfer = (
  transferId: string,
  did: string,
  changes: Partial<InboundTransfer> = {},
): InboundTransfer => ({
  transferId,
  did,
  sourceUrl: SOURCE,
  status: 'pending',
  stage: 'created',
  progress: emptyProgress(),
  missingBlobs: [],
  createdAt: 0,
  updatedAt: 0,
  ...changes,
})

/** The admission rules of `InboundTransferStore.create`, on the SQLite backend. */
describe('SqliteInboundTransferStore admission', () => {
  const dirs: string[] = []
  const stores: SqliteInboundTransferStore[] = []
  afterEach(async () => {
    for (const s of stores.splice(0)) s.close()
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
  })
  const open = async (setup?: (db: Database.Database) => void) => {
    const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-inbound-'))
    dirs.push(dir)
    const path = join(dir, 'transfers.sqlite')
    if (setup) {
      const db = new Database(path)
      setup(db)
      db.close()
    }
    const store = new SqliteInboundTransferStore(path)
    stores.push(store)
    return store
  }
  const limits = (maxPerSource: number) => ({ source: SOURCE, maxPerSource })

  it('one transfer in flight per DID, maxPerSource per source; waiting for the code is not in flight', async () => {
    const store = await open()
    expect(await store.create(transfer('a', 'did:plc:a'), limits(2))).toBeUndefined()
    expect(await store.create(transfer('a2', 'did:plc:a'), limits(2))).toEqual({ refused: 'DidInFlight' })
    expect(await store.create(transfer('b', 'did:plc:b'), limits(2))).toBeUndefined()
    expect(await store.create(transfer('c', 'did:plc:c'), limits(2))).toEqual({
      refused: 'SourceLimit',
      inFlight: 2,
    })
    expect(
      await store.create(transfer('x', 'did:plc:x'), { source: 'https://other.example', maxPerSource: 2 }),
    ).toBeUndefined()
    // A refused transfer left nothing behind.
    expect(await store.get('a2')).toBeUndefined()
    expect(await store.get('c')).toBeUndefined()

    await store.update('a', { status: 'importing', stage: 'awaitingPlcToken' })
    expect(await store.create(transfer('c', 'did:plc:c'), limits(2))).toBeUndefined()
    expect(await store.create(transfer('a3', 'did:plc:a'), limits(3))).toBeUndefined()
    // The waiting one cannot go back in flight beside the new pull of its DID.
    const refused = await store
      .update('a', { status: 'completing', stage: 'signing' })
      .catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(EngineError)
    expect(refused).toMatchObject({
      code: 'InvalidState',
      message: 'did:plc:a has another transfer in flight',
    })
    expect((await store.get('a'))?.stage).toBe('awaitingPlcToken')
  })

  it('a store from before the admission columns gains them, filled from its records', async () => {
    const store = await open((db) => {
      db.exec(`CREATE TABLE inbound_transfer (
        transfer_id TEXT PRIMARY KEY, did TEXT NOT NULL, status TEXT NOT NULL,
        watch_until INTEGER, record TEXT NOT NULL)`)
      const insert = db.prepare(
        'INSERT INTO inbound_transfer (transfer_id, did, status, record) VALUES (?, ?, ?, ?)',
      )
      for (const t of [
        transfer('old', 'did:plc:old', {
          status: 'exporting',
          stage: 'streaming',
          sourceUrl: 'HTTPS://Source.example/',
        }),
        transfer('done', 'did:plc:done', { status: 'failed', stage: 'failed' }),
      ])
        insert.run(t.transferId, t.did, t.status, JSON.stringify(t))
    })
    expect(await store.create(transfer('new', 'did:plc:old'), limits(5))).toEqual({ refused: 'DidInFlight' })
    expect(await store.create(transfer('n1', 'did:plc:n1'), limits(1))).toEqual({
      refused: 'SourceLimit',
      inFlight: 1,
    })
    expect(await store.create(transfer('n2', 'did:plc:done'), limits(2))).toBeUndefined()
    expect((await store.listActive()).map((t) => t.transferId).sort()).toEqual(['n2', 'old'])
  })
})
