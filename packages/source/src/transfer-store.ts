/** Status machine of section 2.3, as the source sees a transfer. */
export type TransferStatus = 'pending' | 'exporting' | 'importing' | 'completing' | 'completed' | 'failed'

import type { SignedPlcOperation } from './account-source.ts'
import type { PlcChange } from './plc-operation.ts'

/**
 * Completion as the source records it, step by step, so that a repeated or interrupted
 * completeTransfer continues it instead of failing (spec/completion.md).
 */
export interface SourceCompletion {
  /** SHA-256 (hex) of the PLC code consumed for this transfer: a retry with it goes on. */
  tokenHash: string
  /** The move asked for; a repeat must ask for the same. */
  change: PlcChange
  /** When the account was deactivated for this move (the reclaim timer starts here). */
  deactivatedAt?: number
  /** The operation signed: the answer to every repeat of the same request. */
  signedOperation?: SignedPlcOperation
  /** When PLC was seen naming the destination: the move is final, nothing to reclaim. */
  settledAt?: number
}

/** What the source remembers of one exportAccount session (and its resumptions). */
export interface SourceTransfer {
  transferId: string
  did: string
  /** OAuth client that started it; only it may complete or query it. */
  clientId: string
  algorithm: string
  status: TransferStatus
  /** Rev of the repo snapshot exported (decision 6). */
  exportedRev?: string
  framesSent: number
  bytesSent: number
  blobsSent: number
  error?: string
  completion?: SourceCompletion
  /** Wrong PLC codes given since the last code was sent (attempts are limited). */
  tokenFailures?: number
  createdAt: number
  updatedAt: number
}

/** Durable record of transfers; survives restarts. Default backend: SQLite. */
export interface SourceTransferStore {
  create(transfer: SourceTransfer): Promise<void>
  get(transferId: string): Promise<SourceTransfer | undefined>
  /** The transfer of `did` that is neither completed nor failed, if any. */
  findActive(did: string): Promise<SourceTransfer | undefined>
  update(
    transferId: string,
    changes: Partial<Omit<SourceTransfer, 'transferId' | 'did' | 'createdAt'>>,
  ): Promise<void>
  /** Transfers created for `clientId` since `since` (ms), for the per-destination rate limit. */
  countCreatedSince(clientId: string, since: number): Promise<number>
  /** Transfers not updated since `before` and still active: to cancel for lack of progress. */
  listStale(before: number): Promise<SourceTransfer[]>
  /**
   * Transfers whose account was deactivated for the move before `before` and whose move was
   * not yet seen in PLC: candidates to take back.
   */
  listUnsettled(before: number): Promise<SourceTransfer[]>
}
