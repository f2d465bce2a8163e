/** Status machine of section 2.3, as the source sees a transfer. */
export type TransferStatus = 'pending' | 'exporting' | 'importing' | 'completing' | 'completed' | 'failed'

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
}
