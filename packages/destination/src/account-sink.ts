import type { AccountState } from '@pds-transfer/core'

/** A repo block whose bytes have been checked against its CID. */
export interface VerifiedBlock {
  cid: Uint8Array
  bytes: Uint8Array
}

/** Blocks staged for one import; nothing here is visible as the account's repo until `commitRepo`. */
export interface RepoStaging {
  put(blocks: VerifiedBlock[]): Promise<void>
  get(cid: Uint8Array): Promise<Uint8Array | undefined>
  /** Drops everything staged (a failed or abandoned import). */
  discard(): Promise<void>
}

/** The blocks of an account's committed repo, read by CID, until `close`. */
export interface HeldBlocks {
  get(cid: Uint8Array): Promise<Uint8Array | undefined>
  close(): Promise<void>
}

/** A blob being written; only `commit` makes it part of the account. */
export interface BlobUpload {
  write(chunk: Uint8Array): Promise<void>
  /** Called once the blob's CID and its frame's tag have verified. */
  commit(): Promise<void>
  abort(): Promise<void>
}

/**
 * What the receiving PDS gives the destination engine: the seam where a PDS
 * plugs in its own storage. See `@pds-transfer/atproto-pds` for the reference
 * PDS and `@pds-transfer/conformance`'s SQLite store for a small one.
 */
export interface AccountSink {
  /**
   * Creates the account, deactivated, with a new repo signing key; for a DID already being
   * imported here (an earlier, failed attempt) returns the existing account's key.
   */
  createDeactivatedAccount(did: string, options: { handle?: string }): Promise<{ signingKey: string }>
  /** True if the DID is hosted here as an active account (then an import must not touch it). */
  isActive(did: string): Promise<boolean>
  /** Staging area for the blocks of one repo import. */
  stageRepo(did: string): Promise<RepoStaging>
  /**
   * Reads the blocks of the account's committed repo. Optional: with it a catch-up asks the
   * source for only what changed (extension repo-diff) and reads the rest from here; without it
   * every catch-up brings the whole CAR.
   */
  openRepoBlocks?(did: string): Promise<HeldBlocks>
  /** Makes the staged, fully verified repo the account's repo at `commitCid` / `rev`. */
  commitRepo(did: string, staging: RepoStaging, head: { commitCid: string; rev: string }): Promise<void>
  /** Starts storing a blob; size and CID are declared, and checked by the engine. */
  startBlob(did: string, cid: string, size: number): Promise<BlobUpload>
  hasBlob(did: string, cid: string): Promise<boolean>
  putPreferences(did: string, preferences: unknown[]): Promise<void>
  /** Applies the recognised fields of the private state (the destination MUST import all common ones). */
  putAccountState(did: string, state: AccountState): Promise<void>
  /** Activates the account once the PLC operation is accepted. */
  activate(did: string): Promise<void>
  /**
   * Sets the password the user chose for signing in here (credentials never move: D24). Called
   * after activation, only with a password the user typed together with their PLC code.
   * Optional: a PDS without it has its users set one through its own reset-password email.
   */
  setPassword?(did: string, password: string): Promise<void>
  /**
   * The records (posts, profile, ...) that reference the given blobs, for telling a user which
   * posts would lose which images if they move without them. Optional.
   */
  recordsUsingBlobs?(did: string, cids: string[]): Promise<BlobUse[]>
  /**
   * Removes what the writes of a process that died mid-write left behind (a blob's temporary
   * file, a repo's staged blocks): `abort` and `discard` never ran for them. Called by
   * `TransferEngine.recover()` before any pull resumes. It must leave alone what a live process
   * is writing (several workers may share a sink). Returns how many leftovers it removed.
   * Optional, but a sink without it keeps the leftovers of every crash.
   */
  sweepUnfinished?(): Promise<number>
}

/** A record that references a blob, as the user would recognise it. */
export interface BlobUse {
  cid: string
  /** `at://` URI of the record. */
  uri: string
  /** The start of its text (a post's), if it has one. */
  text?: string
  createdAt?: string
}
