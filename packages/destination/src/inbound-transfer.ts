import type { RestoreIdentity } from './restore-admission.ts'

/** Status values of section 2.3. */
export type TransferStatus = 'pending' | 'exporting' | 'importing' | 'completing' | 'completed' | 'failed'

/**
 * Finer-grained step within a status: what the engine is doing or waiting for.
 * `awaitingPlcToken` is where the user's action is needed.
 */
export type TransferStage =
  | 'created'
  | 'streaming'
  | 'retrying'
  | 'reconciling'
  | 'awaitingPlcToken'
  /** A restore holds the data; it waits for the user's signed PLC operation (spec/recovery.md). */
  | 'awaitingRecovery'
  | 'catchingUp'
  /** The code and requested keys are stored; the source is asked to sign the move (completeTransfer). */
  | 'signing'
  /** The source's operation is checked and stored; it is being submitted to PLC. */
  | 'submittingPlc'
  /** The PLC directory names us; activating the account failed and is retried by `complete`. */
  | 'activating'
  | 'activated'
  | 'failed'

/** Named reasons a transfer fails; shown in the status and to the user. */
export type FailureReason =
  | 'SourceRefused'
  | 'SourceUnreachable'
  | 'NoCommonAlgorithm'
  | 'StreamInvalid'
  | 'StreamCut'
  | 'RepoInvalid'
  | 'BlobInvalid'
  | 'PreferencesInvalid'
  | 'AccountStateInvalid'
  | 'AccountAlreadyActive'
  | 'PlcOperationInvalid'
  | 'PlcSubmitFailed'
  | 'ActivationFailed'
  | 'NoProgress'
  | 'LimitExceeded'
  | 'Interrupted'
  /** This server's own storage failed (a full disk, a read-only file system): not retried until fixed. */
  | 'LocalStorage'
  /** The user cancelled the move before their identity was asked to change. */
  | 'Cancelled'
  /** The PLC directory did not answer while the move was submitted (the operation is kept; retried). */
  | 'PlcUnreachable'
  /** Blobs the records use could not be had from the source; the user may move without them. */
  | 'BlobsMissing'
  /** An error of this server itself (a bug), not of the source, the connection or the disk. */
  | 'Internal'

/**
 * What the destination holds of the stream, each blob counted once however many export
 * sessions (retries, resumes, restarts) brought it. Frames and bytes likewise, except the small
 * documents (preferences, private state) a resumed session sends again after a cut that came
 * after them.
 */
export interface TransferProgress {
  framesReceived: number
  bytesReceived: number
  blobsReceived: number
  /** Blobs fetched one by one by reconciliation. */
  blobsReconciled: number
  /** Blobs referenced by records that could not be had (listed in `missingBlobs`). */
  blobsMissing: number
  records: number
}

/** The destination's durable record of one inbound transfer. */
export interface InboundTransfer {
  transferId: string
  did: string
  /** Source PDS base URL. */
  sourceUrl: string
  /** Source PDS service DID (its well-known document). */
  sourceDid?: string
  /**
   * A copy of the account (a backup) the repo and blobs were read from first, the PDS giving
   * the rest (`TransferEngine.start`'s `copy`). A pull resumed without it reads from the PDS.
   */
  copyUrl?: string
  /**
   * What kind of source it is: `plain`, a PDS with nothing of ours (sync endpoints); `restore`,
   * a copy of the account (a backup, any getRepo/getBlob endpoint) while the identity is taken
   * back with the user's key; `draft`, a source serving the current draft's JSON exportAccount
   * (spec/dialect-draft.md); absent, v1.
   */
  dialect?: 'plain' | 'restore' | 'draft'
  /**
   * A draft source: the capabilities both sides have (§7), set by its exportAccount; only these
   * are used. Absent until that call answered.
   */
  capabilities?: string[]
  /** A restore: the user's key and what the copy is verified against (decided at admission). */
  restore?: RestoreIdentity
  /** When the PLC code was last requested from a plain source (once the data had moved). */
  plcCodeRequestedAt?: number
  algorithm?: string
  kid?: string
  status: TransferStatus
  stage: TransferStage
  progress: TransferProgress
  /** Head imported (decision 6: completion needs the source to still be at this rev). */
  repo?: { rev: string; commitCid: string }
  /** The account's new signing key here (`did:key`). */
  signingKey?: string
  missingBlobs: string[]
  /** Catch-up exports run because the source's repo moved before completion (decision 6). */
  catchUps?: number
  /** Plaintext bytes the catch-up exports brought, in all and of it repo CAR (repo-diff keeps both small). */
  catchUpBytes?: { repo: number; total: number }
  /**
   * A plain source that could not be deactivated after the move, and why: the user should
   * deactivate the old account there themselves (it still takes writes no one will see).
   */
  sourceLeftActive?: string
  /**
   * What of the account this move leaves behind, with why and what it costs the user (a plain
   * source refusing the permissioned-data scope); shown in /migrate before the code step.
   */
  notMoved?: string[]
  /** A restore: what its copy did not hold, with why (preferences, email); the rest is restored. */
  notRestored?: string[]
  /** Whether the password the user chose in /migrate was set at activation (D24). */
  passwordChosen?: boolean
  /** Last blob committed, in the source's listing order: where a resumed export continues. */
  blobCursor?: string
  /** The last retry of a broken export session: which attempt, when the next starts, and why. */
  retry?: {
    attempt: number
    of: number
    nextAt: number
    lastFailure: { reason: FailureReason; message: string }
  }
  /**
   * How the end of the stream was established: `manifest` (extension end-manifest: an
   * authenticated last frame matched what arrived) or `unverified` (a literal 0014 source: EOF
   * at a frame boundary, so only blob reconciliation stands behind completeness).
   */
  endOfStream?: 'manifest' | 'unverified'
  /**
   * Extension size-hint: about how many plaintext bytes and blobs the pull brings in all
   * (what earlier sessions received plus the source's hint for the current one). For progress
   * display only; nothing is verified against it.
   */
  expected?: { bytes: number; blobs: number }
  /**
   * Why the transfer failed, or (while it is not failed) why its last completion attempt
   * stopped: shown beside the next action.
   */
  failure?: { reason: FailureReason; message: string }
  /**
   * What the user asked completion with, stored before the source is asked to sign, so that
   * a restarted process continues it (the code is single-use at the source; dropped when
   * completion returns to the code step or ends).
   */
  completion?: {
    plcToken: string
    newRotationKeys: string[]
    userRotationKey?: string
    /** The user chose to move without the blobs listed missing (also those a catch-up finds). */
    acceptMissingBlobs?: boolean
    /**
     * When this code was first sent to a plain PDS to sign (recorded before the call): a source
     * that refuses it after that has spent it on a signature whose answer was lost.
     */
    signAskedAt?: number
  }
  /** The source's signed PLC operation, checked, stored before it is submitted. */
  plcOperation?: Record<string, unknown>
  /** Rollback watch (section "Adversarial migration"): until when, and what it found. */
  watchUntil?: number
  rollback?: { detectedAt: number; operationCid: string; message: string }
  createdAt: number
  updatedAt: number
}

/**
 * Stages in which the engine works on a transfer: pulling it from its source or completing the
 * move. Not in flight: waiting for the user's code (`awaitingPlcToken`, possibly for days),
 * `activating` (PLC already names us) and the ends. A DID has at most one transfer in flight,
 * and a source at most `maxPerSource` (`InboundTransferStore.create`).
 */
export const IN_FLIGHT_STAGES: ReadonlySet<TransferStage> = new Set([
  'created',
  'streaming',
  'retrying',
  'reconciling',
  'catchingUp',
  'signing',
  'submittingPlc',
])

/** What `InboundTransferStore.create` holds a new transfer against, atomically with the insert. */
export interface AdmissionLimits {
  /** The transfer's source as compared with other transfers' sources (a normalized URL). */
  source: string
  /** Transfers in flight from one source at most. */
  maxPerSource: number
}

/** Why `InboundTransferStore.create` refused a transfer; nothing was recorded. */
export type AdmissionRefusal =
  /** The DID already has a transfer in flight. */
  | { refused: 'DidInFlight' }
  /** The source already has `inFlight` (at least `maxPerSource`) transfers in flight. */
  | { refused: 'SourceLimit'; inFlight: number }

/** Durable transfer records; a restarted process knows every transfer. Default backend: SQLite. */
export interface InboundTransferStore {
  /**
   * Records a new transfer unless it is refused, checking and inserting as one atomic step:
   * of concurrent calls (requests of one process, or workers sharing the database) no two may
   * pass on the same state. Refused when `transfer.did` already has a transfer in
   * `IN_FLIGHT_STAGES`, or `limits.source` has `limits.maxPerSource` of them. A SQL backend
   * checks and inserts in one transaction that serializes with other creates (SQLite: `BEGIN
   * IMMEDIATE`; Postgres: `SERIALIZABLE`, or a lock on the source's row), and backs the DID
   * rule with a partial unique index on the DID of in-flight rows. Returns the refusal, or
   * `undefined` once the transfer is recorded.
   */
  create(transfer: InboundTransfer, limits: AdmissionLimits): Promise<AdmissionRefusal | undefined>
  get(transferId: string): Promise<InboundTransfer | undefined>
  /**
   * Applies `changes` and bumps `updatedAt`; returns the updated record. Throws
   * `EngineError('InvalidState')`, changing nothing, when the change would put a second
   * transfer of the DID in flight (the DID rule of `create`).
   */
  update(
    transferId: string,
    changes: Partial<Omit<InboundTransfer, 'transferId' | 'did' | 'createdAt'>>,
  ): Promise<InboundTransfer>
  /** Transfers whose status is neither completed nor failed. */
  listActive(): Promise<InboundTransfer[]>
  /** Every transfer of `did`, newest first (a user coming back to a failed move). */
  listForDid(did: string): Promise<InboundTransfer[]>
  /** Completed transfers still inside their rollback watch at `now`. */
  listWatched(now: number): Promise<InboundTransfer[]>
  /**
   * Blob CIDs referenced by the repo verified for a transfer (replacing any earlier set), so
   * that a restarted process can resume and reconcile without walking the repo again.
   */
  putReferencedBlobs(transferId: string, cids: Iterable<string>): Promise<void>
  getReferencedBlobs(transferId: string): Promise<string[]>
}

export function emptyProgress(): TransferProgress {
  return {
    framesReceived: 0,
    bytesReceived: 0,
    blobsReceived: 0,
    blobsReconciled: 0,
    blobsMissing: 0,
    records: 0,
  }
}
