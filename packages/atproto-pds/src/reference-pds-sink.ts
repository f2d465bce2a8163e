import { mkdir, readdir, rm } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { Secp256k1Keypair } from '@atproto/crypto'
import { decodeCid, enumBlobRefs, parseCid } from '@atproto/lex-data'
import { type AppContext, DiskBlobStore } from '@atproto/pds'
import { def, verifyCommitSig } from '@atproto/repo'
import { AtUri } from '@atproto/syntax'
import type { AccountState } from '@pds-transfer/core'
import {
  type AccountSink,
  type BlobUpload,
  type BlobUse,
  type HeldBlocks,
  ImportFailure,
  type RepoStaging,
  RepoStagingFile,
  stagedRecords,
  unfinishedName,
  writerGone,
} from '@pds-transfer/destination'
import { importAccountState } from './account-state.ts'
import { ActorBlobIndex, UNKNOWN_MIME } from './actor-blob-index.ts'
import { openActorDb } from './actor-db.ts'
import { BlobStoreUpload } from './blob-store-upload.ts'
import { DiskBlobUpload, TRANSFER_TMP } from './disk-blob-upload.ts'
import { type Backlink, getBacklinks } from './pds-backlinks.ts'

import { WriteBudget } from './write-budget.ts'
import { WriteFreeze } from './write-freeze.ts'

type Did = `did:${string}:${string}`

/** An account's blob index is closed after this long without a blob. */
const BLOB_INDEX_IDLE_MS = 2000

/** Blob bytes the disk may have queued and not yet written, over all imports of this PDS. */
const BLOB_WRITE_BUDGET = 16 << 20

export interface ReferencePdsSinkOptions {
  /** Where staged repo imports are kept until committed (a directory of the PDS's data). */
  stagingDir: string
}

/**
 * The reference PDS (`@atproto/pds`) as the receiving side of a transfer. The account is
 * created deactivated with a fresh signing key; the verified repo is staged outside the actor
 * database and swapped in with its records indexed in one actor transaction (as `importRepo`
 * would, but without holding the repo in memory); blobs are streamed into the PDS's blob store.
 * After activation the PDS serves the account like any other.
 */
export class ReferencePdsSink implements AccountSink {
  private readonly blobIndexes = new Map<string, { index: Promise<ActorBlobIndex>; idle?: NodeJS.Timeout }>()
  private readonly blobWrites = new WriteBudget(BLOB_WRITE_BUDGET)

  constructor(
    private readonly ctx: AppContext,
    private readonly options: ReferencePdsSinkOptions,
  ) {}

  async createDeactivatedAccount(did: string, options: { handle?: string }): Promise<{ signingKey: string }> {
    // A live account is never an import's target, whatever the engine checked before (a race,
    // a bug): its actor store would be reused and its repo replaced.
    if (await this.isActive(did)) {
      throw new ImportFailure('AccountAlreadyActive', `${did} is an active account on this PDS`)
    }
    // An account that once left this PDS and now comes back is written to here again.
    WriteFreeze.of(this.ctx).thaw(did)
    if (await this.ctx.actorStore.exists(did)) {
      return { signingKey: (await this.ctx.actorStore.keypair(did)).did() }
    }
    const keypair = await Secp256k1Keypair.create({ exportable: true })
    await this.ctx.actorStore.create(did, keypair)
    try {
      // An empty signed repo until the import: the account manager wants a root from the start.
      const commit = await this.ctx.actorStore.transact(did as Did, (store) => store.repo.createRepo([]))
      await this.ctx.accountManager.createAccount({
        did: did as Did,
        handle: (options.handle ?? 'handle.invalid') as `${string}.${string}`,
        repoCid: commit.cid,
        repoRev: commit.rev,
        deactivated: true,
      })
    } catch (err) {
      await this.ctx.actorStore.destroy(did as Did)
      throw err
    }
    return { signingKey: keypair.did() }
  }

  async isActive(did: string): Promise<boolean> {
    const account = await this.ctx.accountManager.getAccount(did as Did, {
      includeDeactivated: true,
      includeTakenDown: true,
    })
    return account !== null && !account.deactivatedAt && !account.takedownRef
  }

  async stageRepo(_did: string): Promise<RepoStaging> {
    await mkdir(this.options.stagingDir, { recursive: true })
    return new RepoStagingFile(join(this.options.stagingDir, `${unfinishedName()}.sqlite`))
  }

  async openRepoBlocks(did: string): Promise<HeldBlocks> {
    const db = await openActorDb(this.ctx, did)
    const select = db.prepare('SELECT content FROM repo_block WHERE cid = ?').pluck()
    return {
      async get(cid) {
        const bytes = select.get(decodeCid(cid).toString()) as Buffer | undefined
        return bytes && new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      },
      async close() {
        if (db.open) db.close()
      },
    }
  }

  async commitRepo(
    did: string,
    staging: RepoStaging,
    head: { commitCid: string; rev: string },
  ): Promise<void> {
    if (!(staging instanceof RepoStagingFile)) throw new Error('staging was not made by this sink')
    const commitCid = parseCid(head.commitCid)
    if (!(await staging.get(commitCid.bytes))) throw new Error(`commit ${head.commitCid} is not staged`)
    const now = new Date().toISOString()
    await this.ctx.actorStore.transact(did as Did, async (store) => {
      const db = store.repo.db.db
      for (const table of ['repo_block', 'record', 'record_blob', 'backlink'] as const) {
        await db.deleteFrom(table).execute()
      }
      for (const batch of staging.batches(50)) {
        await db
          .insertInto('repo_block')
          .values(
            batch.map((b) => ({
              cid: decodeCid(b.cid).toString(),
              repoRev: head.rev,
              size: b.bytes.length,
              content: b.bytes,
            })),
          )
          .execute()
      }
      await store.repo.storage.updateRoot(commitCid, head.rev)
      // What the PDS's indexRecord + insertBlobs do per record, in batches: one statement per
      // table per batch instead of three to four per record (kysely prepares each anew), which
      // made indexing the larger part of a 10k-record repo's import.
      for await (const batch of inBatches(stagedRecords(staging, commitCid), 200)) {
        const records: Array<{ uri: string; cid: string; collection: string; rkey: string }> = []
        const backlinks: Backlink[] = []
        const recordBlobs: Array<{ recordUri: string; blobCid: string }> = []
        const mimeTypes = new Map<string, string[]>()
        for (const { collection, rkey, cid, record } of batch) {
          const uri = AtUri.make(did, collection, rkey)
          records.push({ uri: uri.toString(), cid: cid.toString(), collection, rkey })
          backlinks.push(...getBacklinks(uri, record))
          for (const ref of enumBlobRefs(record, { allowLegacy: true, strict: false })) {
            const blobCid = 'cid' in ref ? ref.cid : ref.ref.toString()
            recordBlobs.push({ recordUri: uri.toString(), blobCid })
            mimeTypes.set(ref.mimeType, [...(mimeTypes.get(ref.mimeType) ?? []), blobCid])
          }
        }
        await db
          .insertInto('record')
          .values(records.map((r) => ({ ...r, repoRev: head.rev, indexedAt: now })))
          .execute()
        if (backlinks.length > 0)
          await db
            .insertInto('backlink')
            .values(backlinks)
            .onConflict((oc) => oc.doNothing())
            .execute()
        if (recordBlobs.length > 0)
          await db
            .insertInto('record_blob')
            .values(recordBlobs)
            .onConflict((oc) => oc.doNothing())
            .execute()
        // Blobs that arrived before the records (a resumed transfer) learn their type now.
        for (const [mimeType, cids] of mimeTypes) {
          await db
            .updateTable('blob')
            .set({ mimeType })
            .where('cid', 'in', cids)
            .where('mimeType', '=', UNKNOWN_MIME)
            .execute()
        }
      }
    })
    await this.ctx.accountManager.updateRepoRoot(did as Did, commitCid, head.rev)
    await staging.discard()
  }

  async startBlob(did: string, cid: string, size: number): Promise<BlobUpload> {
    const blobstore = this.ctx.blobstore(did)
    const parsed = parseCid(cid)
    const upload =
      blobstore instanceof DiskBlobStore
        ? DiskBlobUpload.start(blobstore, parsed, size, this.blobWrites)
        : BlobStoreUpload.start(blobstore, parsed)
    return {
      write: (chunk) => upload.write(chunk),
      commit: async () => {
        if (upload.size !== size) {
          await upload.abort()
          throw new Error(`blob ${cid}: ${upload.size} bytes, ${size} declared`)
        }
        await upload.commit()
        const index = await this.blobIndex(did)
        index.insert(cid, index.mimeType(cid), upload.size)
      },
      abort: () => upload.abort(),
    }
  }

  /**
   * Removes the repo stagings and temporary blob files of writers that are gone (a process of
   * this PDS killed mid-import: its pid, in their names, no longer runs). The PDS's own
   * temporary uploads (other names) and those of live processes are left alone.
   */
  async sweepUnfinished(): Promise<number> {
    const leftovers: string[] = []
    const staging = this.options.stagingDir
    for (const name of await readdir(staging).catch(() => [] as string[]))
      if (name.endsWith('.sqlite') || /\.sqlite-(wal|shm)$/.test(name))
        if (writerGone(name)) leftovers.push(join(staging, name))
    const store = this.ctx.blobstore('did:plc:sweep')
    if (store instanceof DiskBlobStore) {
      // The temporary directory has one directory per account.
      const tmp = dirname(dirname(store.getTmpPath('x')))
      for (const did of await readdir(tmp).catch(() => [] as string[]))
        for (const name of await readdir(join(tmp, did)).catch(() => [] as string[]))
          if (name.startsWith(TRANSFER_TMP) && writerGone(name.slice(TRANSFER_TMP.length)))
            leftovers.push(join(tmp, did, name))
    }
    await Promise.all(leftovers.map((path) => rm(path, { force: true })))
    return leftovers.length
  }

  async hasBlob(did: string, cid: string): Promise<boolean> {
    const index = await this.blobIndex(did)
    return index.has(cid) && (await this.ctx.blobstore(did).hasStored(parseCid(cid)))
  }

  async putPreferences(did: string, preferences: unknown[]): Promise<void> {
    await this.ctx.actorStore.transact(did as Did, (store) =>
      store.pref.putPreferences(preferences as never, 'app.bsky', { hasAccessFull: true }),
    )
  }

  async putAccountState(did: string, state: AccountState): Promise<void> {
    await importAccountState(this.ctx, did, state)
  }

  async activate(did: string): Promise<void> {
    // The PLC directory now names us: drop any DID document the PDS cached while it did not.
    await this.ctx.didCache.clearEntry(did)
    await this.resignHead(did)
    await this.dropUnreferencedBlobs(did)
    // Sequences #identity, #account (active) and #sync with the head written above.
    await this.ctx.accountManager.activateAccount(did as Did)
    this.closeBlobIndex(did)
  }

  /**
   * Deletes the blobs no record of the final repo uses: images of posts the user edited or
   * deleted while the move ran arrived with an earlier snapshot, and the PDS itself drops a
   * blob nothing references. A deleted image must not stay retrievable here.
   */
  private async dropUnreferencedBlobs(did: string): Promise<void> {
    const cids = await this.ctx.actorStore.transact(did as Did, async (store) => {
      const db = store.repo.db.db
      const rows = await db
        .deleteFrom('blob')
        .where('cid', 'not in', db.selectFrom('record_blob').select('blobCid'))
        .returning('cid')
        .execute()
      return rows.map((r) => r.cid)
    })
    if (cids.length > 0) await this.ctx.blobstore(did).deleteMany(cids.map((cid) => parseCid(cid)))
  }

  /**
   * Writes a commit of the same data signed with this PDS's key for the account, unless the
   * head already is one. The imported head was signed by the old PDS's key, and "the most
   * recent commit should always be verifiable using the current DID document" (repository
   * spec): without this, B's getRepo and the #sync event of the activation fail verification
   * against PLC, and relays drop the account (decision 10).
   */
  private async resignHead(did: string): Promise<void> {
    const key = await this.ctx.actorStore.keypair(did)
    const commit = await this.ctx.actorStore.transact(did as Did, async (store) => {
      const root = await store.repo.storage.getRoot()
      if (root) {
        const head = await store.repo.storage.readObj(root, def.commit)
        if (await verifyCommitSig(head, key.did())) return undefined
      }
      return store.repo.processWrites([])
    })
    if (commit) await this.ctx.accountManager.updateRepoRoot(did as Did, commit.cid, commit.rev)
  }

  async setPassword(did: string, password: string): Promise<void> {
    await this.ctx.accountManager.updateAccountPassword({ did: did as Did, password })
    // An account imported without an email has no row to hold a password: say so, not "done".
    if (!(await this.ctx.accountManager.verifyAccountPassword(did as Did, password))) {
      throw new Error(`${did} has no sign-in record here (no email was moved)`)
    }
  }

  async recordsUsingBlobs(did: string, cids: string[]): Promise<BlobUse[]> {
    if (cids.length === 0) return []
    return this.ctx.actorStore.read(did as Did, async (store) => {
      const links = await store.repo.db.db
        .selectFrom('record_blob')
        .select(['recordUri', 'blobCid'])
        .where('blobCid', 'in', cids)
        .execute()
      const uses: BlobUse[] = []
      for (const link of links) {
        const record = await store.record.getRecord(new AtUri(link.recordUri), null)
        const value = (record?.value ?? {}) as { text?: unknown; createdAt?: unknown }
        uses.push({
          cid: link.blobCid,
          uri: link.recordUri,
          ...(typeof value.text === 'string' && { text: value.text.slice(0, 120) }),
          ...(typeof value.createdAt === 'string' && { createdAt: value.createdAt }),
        })
      }
      return uses
    })
  }

  /** The account's blob index, opened on first use and closed once blobs stop arriving. */
  private async blobIndex(did: string): Promise<ActorBlobIndex> {
    let entry = this.blobIndexes.get(did)
    if (!entry) {
      const index = ActorBlobIndex.open(this.ctx, did)
      index.catch(() => this.blobIndexes.delete(did))
      entry = { index }
      this.blobIndexes.set(did, entry)
    }
    clearTimeout(entry.idle)
    entry.idle = setTimeout(() => this.closeBlobIndex(did), BLOB_INDEX_IDLE_MS).unref()
    return entry.index
  }

  private closeBlobIndex(did: string): void {
    const entry = this.blobIndexes.get(did)
    if (!entry) return
    clearTimeout(entry.idle)
    this.blobIndexes.delete(did)
    entry.index.then(
      (index) => index.close(),
      () => undefined,
    )
  }
}

/** `items` in arrays of up to `size`. */
async function* inBatches<T>(items: AsyncIterable<T>, size: number): AsyncGenerator<T[]> {
  let batch: T[] = []
  for await (const item of items) {
    batch.push(item)
    if (batch.length === size) {
      yield batch
      batch = []
    }
  }
  if (batch.length > 0) yield batch
}
