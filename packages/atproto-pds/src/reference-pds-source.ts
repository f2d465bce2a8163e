import type { Readable } from 'node:stream'
import { parseCid } from '@atproto/lex-data'
import type { AppContext } from '@atproto/pds'
import type { AccountState } from '@pds-transfer/core'
import type {
  AccountSource,
  BlobPage,
  RepoSnapshot,
  SourceAccount,
  SourceAccountStatus,
} from '@pds-transfer/source'
import { exportAccountState } from './account-state.ts'
import { readActorDb } from './actor-db.ts'
import { openRepoSnapshot } from './repo-snapshot.ts'
import { WriteFreeze } from './write-freeze.ts'

export interface ReferencePdsSourceOptions {
  /**
   * Called with every PLC token this source creates, besides the email the PDS sends. For
   * development setups whose PDS has no SMTP server (the demo prints it; tests read it).
   */
  onPlcToken?: (did: string, token: string) => void
}

/**
 * The reference PDS (`@atproto/pds`) as the sending side of a transfer: reads its actor store,
 * blob store and account database, sends the PLC token through its mailer, and deactivates
 * through its account manager (which also emits the `#account` event on the firehose).
 */
export class ReferencePdsSource implements AccountSource {
  private readonly writes: WriteFreeze

  constructor(
    private readonly ctx: AppContext,
    private readonly options: ReferencePdsSourceOptions = {},
  ) {
    this.writes = WriteFreeze.of(ctx)
  }

  async getAccount(did: string): Promise<SourceAccount | undefined> {
    const account = await this.ctx.accountManager.getAccount(did as `did:${string}:${string}`, {
      includeDeactivated: true,
      includeTakenDown: true,
    })
    if (!account) return undefined
    const status: SourceAccountStatus = account.takedownRef
      ? 'takendown'
      : account.deactivatedAt
        ? 'deactivated'
        : 'active'
    return { did, status, ...(account.handle && { handle: account.handle }) }
  }

  async snapshotRepo(did: string, options: { since?: string } = {}): Promise<RepoSnapshot> {
    const { dbLocation } = await this.ctx.actorStore.getLocation(did)
    return openRepoSnapshot(dbLocation, options.since)
  }

  async currentRev(did: string): Promise<string> {
    return readActorDb(this.ctx, did, (db) => {
      const row = db.prepare('SELECT rev FROM repo_root').get() as { rev: string } | undefined
      if (!row) throw new Error(`no repo for ${did}`)
      return row.rev
    })
  }

  async listBlobs(did: string, options: { cursor?: string; limit: number }): Promise<BlobPage> {
    // Only blobs a record references: an upload never used (tempKey set) is not account data.
    const blobs = await readActorDb(
      this.ctx,
      did,
      (db) =>
        db
          .prepare(
            `SELECT b.cid, b.size FROM blob b
             WHERE b.tempKey IS NULL AND b.cid > ?
               AND EXISTS (SELECT 1 FROM record_blob r WHERE r.blobCid = b.cid)
             ORDER BY b.cid LIMIT ?`,
          )
          .all(options.cursor ?? '', options.limit) as { cid: string; size: number }[],
    )
    const last = blobs.at(-1)
    return { blobs, ...(blobs.length === options.limit && last && { cursor: last.cid }) }
  }

  async hasBlob(did: string, cid: string): Promise<boolean> {
    return this.ctx.blobstore(did).hasStored(parseCid(cid))
  }

  async openBlob(did: string, cid: string): Promise<AsyncIterable<Uint8Array> | undefined> {
    const blobstore = this.ctx.blobstore(did)
    const parsed = parseCid(cid)
    if (!(await blobstore.hasStored(parsed))) return undefined
    return (await blobstore.getStream(parsed)) as Readable
  }

  async getPreferences(did: string): Promise<unknown[]> {
    // The stored rows, not the getPreferences view: that one adds derived, read-only items.
    return readActorDb(this.ctx, did, (db) => {
      const rows = db.prepare('SELECT name, valueJson FROM account_pref ORDER BY id').all() as {
        name: string
        valueJson: string
      }[]
      return rows.filter((row) => row.name.startsWith('app.bsky.')).map((row) => JSON.parse(row.valueJson))
    })
  }

  async getAccountState(did: string): Promise<AccountState> {
    return exportAccountState(this.ctx, did)
  }

  async requestPlcToken(did: string): Promise<void> {
    const account = await this.ctx.accountManager.getAccount(did as `did:${string}:${string}`, {
      includeDeactivated: true,
    })
    if (!account?.email) throw new Error(`${did} has no email address to send the PLC token to`)
    const token = await this.ctx.accountManager.createEmailToken(account.did, 'plc_operation')
    await this.ctx.mailer.sendPlcOperation({ token }, { to: account.email })
    this.options.onPlcToken?.(did, token)
  }

  async consumePlcToken(did: string, token: string): Promise<boolean> {
    try {
      await this.ctx.accountManager.assertValidEmailTokenAndCleanup(
        did as `did:${string}:${string}`,
        'plc_operation',
        token,
      )
      return true
    } catch {
      return false
    }
  }

  async deactivate(did: string, options: { retainUntil: Date }): Promise<void> {
    // Writes in flight finish (and are in the head read next) or are refused; none lands later.
    await this.writes.freeze(did)
    try {
      await this.ctx.accountManager.deactivateAccount(did as `did:${string}:${string}`, {
        deleteAfter: options.retainUntil.toISOString(),
      })
      this.writes.deactivated(did)
    } catch (err) {
      this.writes.thaw(did)
      throw err
    }
  }

  async reactivate(did: string): Promise<void> {
    await this.ctx.accountManager.activateAccount(did as `did:${string}:${string}`)
    this.writes.thaw(did)
  }
}
