import type { AccountState } from '@pds-transfer/core'

/** Hosting status of an account on the sending PDS. */
export type SourceAccountStatus = 'active' | 'deactivated' | 'takendown' | 'suspended'

export interface SourceAccount {
  did: string
  handle?: string
  status: SourceAccountStatus
}

/**
 * A consistent view of the repo at one commit. It must keep serving the same
 * blocks while it is read, whatever is written meanwhile (e.g. a read
 * transaction), until `release`.
 */
export interface RepoSnapshot {
  /** Rev of the pinned commit (decision 6: completeTransfer is refused once the head moves past it). */
  rev: string
  /** CID of the signed commit: the CAR root. */
  commitCid: string
  /**
   * Set when the CAR holds only the blocks written after this rev (the commit always among
   * them), as asked by `snapshotRepo`'s `since`; absent for every block of the repo.
   */
  since?: string
  /** Exact byte length of the CAR `open()` yields: the frame header states it before any data. */
  carLength: number
  /** CAR v1 of every block reachable from the commit, streamed. */
  open(): AsyncIterable<Uint8Array>
  release(): Promise<void>
}

/** A blob as listed: its size is needed to size a blobpack frame before streaming it. */
export interface SourceBlobRef {
  cid: string
  size: number
}

export interface BlobPage {
  blobs: SourceBlobRef[]
  /** Pass back to get the next page; absent on the last page. */
  cursor?: string
}

/** A signed PLC operation as submitted to the directory. */
export type SignedPlcOperation = Record<string, unknown> & { sig: string; prev: string | null }

/**
 * What the sending PDS gives the source plugin: the seam where a PDS plugs in
 * its own storage. See `@pds-transfer/atproto-pds` for the reference PDS and
 * `@pds-transfer/conformance`'s SQLite store for a small one.
 */
export interface AccountSource {
  getAccount(did: string): Promise<SourceAccount | undefined>
  /**
   * Pins the current commit. With `since` (a rev the destination holds; extension repo-diff)
   * the CAR may hold only the blocks written after it, like sync `getRepo?since=`; a source
   * that cannot tell sends every block (the destination verifies either over what it holds).
   */
  snapshotRepo(did: string, options?: { since?: string }): Promise<RepoSnapshot>
  /** Rev of the current head, to tell whether writes happened after a snapshot. */
  currentRev(did: string): Promise<string>
  /**
   * Blobs referenced by committed records (at least; orphans may be included),
   * each once, in ascending CID string order after `cursor`.
   */
  listBlobs(did: string, options: { cursor?: string; limit: number }): Promise<BlobPage>
  /** A blob's bytes, streamed; undefined if it is not stored. */
  openBlob(did: string, cid: string): Promise<AsyncIterable<Uint8Array> | undefined>
  /**
   * Whether the blob's bytes are stored (a listed blob whose file a disk lost is not). Optional:
   * without it the export opens the blob and closes it unread to find out.
   */
  hasBlob?(did: string, cid: string): Promise<boolean>
  /** Preferences as stored (a JSON array of `app.bsky.actor.defs#preferences` items). */
  getPreferences(did: string): Promise<unknown[]>
  /** Private account state (section 2.8). */
  getAccountState(did: string): Promise<AccountState>
  /** Sends the user a PLC operation token (email), like `requestPlcOperationSignature`. */
  requestPlcToken(did: string): Promise<void>
  /** Checks and consumes a PLC token; false if wrong or expired. */
  consumePlcToken(did: string, token: string): Promise<boolean>
  /**
   * Deactivates the account for its move, keeping its data until `retainUntil`. When it
   * resolves, no write can commit any more: writes already past the PDS's own "is it active"
   * check have finished, and later ones are refused (completeTransfer reads the final head
   * right after; a write committing later would be acknowledged at this PDS and missing at the
   * next one; spec/completion.md, C9).
   */
  deactivate(did: string, options: { retainUntil: Date }): Promise<void>
  /**
   * Undoes `deactivate` for a move that did not happen (signing failed, or the move never
   * reached PLC and the account is taken back).
   */
  reactivate(did: string): Promise<void>
}
