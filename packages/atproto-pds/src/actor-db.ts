import type { AppContext } from '@atproto/pds'
import Database from 'better-sqlite3'

/**
 * A read-only connection of our own to one account's actor database (the reference PDS keeps a
 * SQLite file per account). In WAL mode it reads beside the PDS's writers; inside a transaction
 * it sees one consistent state however long it is held, which is what a repo snapshot needs.
 */
export async function openActorDb(ctx: AppContext, did: string): Promise<Database.Database> {
  const { dbLocation } = await ctx.actorStore.getLocation(did)
  return new Database(dbLocation, { readonly: true, fileMustExist: true })
}

/** Runs `fn` on a fresh read-only connection, closed afterwards. */
export async function readActorDb<T>(
  ctx: AppContext,
  did: string,
  fn: (db: Database.Database) => T,
): Promise<T> {
  const db = await openActorDb(ctx, did)
  try {
    return fn(db)
  } finally {
    db.close()
  }
}
