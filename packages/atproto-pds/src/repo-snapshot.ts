import { parseCid } from '@atproto/lex-data'
import { carBlockLength, carBlockPrefix, carHeader, type RepoSnapshot } from '@pds-transfer/source'
import Database from 'better-sqlite3'

/**
 * Pins an actor database's repo at its current commit: a read transaction on our own connection
 * keeps serving that state (WAL) while the PDS goes on writing, until `release`. The CAR holds
 * every stored block, or with `since` those written after that rev, as the PDS's own
 * `sync.getRepo` does (each block is stored with the rev of the commit that first wrote it).
 */
export function openRepoSnapshot(dbLocation: string, since?: string): RepoSnapshot {
  const db = new Database(dbLocation, { readonly: true, fileMustExist: true })
  try {
    db.exec('BEGIN')
    const root = db.prepare('SELECT cid, rev FROM repo_root').get() as
      | { cid: string; rev: string }
      | undefined
    if (!root) throw new Error(`no repo in ${dbLocation}`)
    const header = carHeader(parseCid(root.cid))
    const where = since === undefined ? '' : ' WHERE repoRev > @since'
    const params = since === undefined ? {} : { since }
    let carLength = header.length
    const sizes = db
      .prepare(`SELECT cid, length(content) AS size FROM repo_block${where}`)
      .iterate(params) as Iterable<{ cid: string; size: number }>
    for (const { cid, size } of sizes) carLength += carBlockLength(parseCid(cid).bytes.length, size)
    return {
      rev: root.rev,
      commitCid: root.cid,
      carLength,
      ...(since !== undefined && { since }),
      async *open() {
        yield header
        const rows = db.prepare(`SELECT cid, content FROM repo_block${where}`).iterate(params) as Iterable<{
          cid: string
          content: Uint8Array
        }>
        for (const { cid, content } of rows) {
          yield carBlockPrefix(parseCid(cid).bytes, content.length)
          yield content
        }
      },
      async release() {
        if (db.open) {
          db.exec('COMMIT')
          db.close()
        }
      },
    }
  } catch (err) {
    db.close()
    throw err
  }
}
