/**
 * Errors of proposal 0014 (section 2.6) plus the XRPC-standard `InvalidRequest`,
 * and typed errors for every way a transfer stream can be malformed.
 */

/** HTTP status of each error name in the proposal's table (section 2.6). */
export const TRANSFER_ERROR_STATUS = {
  InvalidRequest: 400,
  AccountNotFound: 404,
  TransferNotAuthorized: 403,
  TransferAlreadyActive: 409,
  TransferNotFound: 404,
  InvalidPlcToken: 400,
  AccountDeactivated: 400,
  ExportFailed: 500,
  /** Ours (decision 6): the repo moved past the exported rev; catch up before completing. */
  RepoChangedDuringTransfer: 409,
  /** XRPC standard name, used for the per-destination export rate limit. */
  RateLimitExceeded: 429,
} as const

export type TransferErrorName = keyof typeof TRANSFER_ERROR_STATUS

/** An XRPC-level error: `{ error, message }` with the status the proposal gives it. */
export class TransferError extends Error {
  override readonly name = 'TransferError'
  /** HTTP status: the table's, unless overridden (401 for a missing or invalid token; see spec/errata.md). */
  readonly status: number

  constructor(
    readonly error: TransferErrorName,
    message: string,
    options?: ErrorOptions & { status?: number },
  ) {
    super(message, options)
    this.status = options?.status ?? TRANSFER_ERROR_STATUS[error]
  }

  /** The XRPC error body. */
  toJSON(): { error: TransferErrorName; message: string } {
    return { error: this.error, message: this.message }
  }
}

/** Every distinct way a frame stream, blobpack, or payload can be rejected. */
export type WireErrorReason =
  | 'TruncatedHeader'
  | 'ContentTypeTooLong'
  | 'InvalidContentType'
  | 'FrameOutOfOrder'
  | 'FrameTooLarge'
  | 'TruncatedFrame'
  | 'FrameAuthFailed'
  | 'LengthMismatch'
  | 'UnsupportedAlgorithm'
  | 'InvalidKey'
  | 'BlobpackBadMagic'
  | 'BlobpackBadVersion'
  | 'BlobpackCidTooLong'
  | 'BlobpackBadCid'
  | 'BlobpackBlobTooLarge'
  | 'BlobpackEmptyBlob'
  | 'BlobpackTruncated'
  | 'BlobpackCidMismatch'
  | 'InvalidAccountState'
  | 'InvalidPreferences'
  | 'InvalidWellKnown'
  | 'InvalidEndManifest'

/** A stream or payload that violates the wire format; `reason` names the rule broken. */
export class WireError extends Error {
  override readonly name = 'WireError'
  constructor(
    readonly reason: WireErrorReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`${reason}: ${message}`, options)
  }
}
