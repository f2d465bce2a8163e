/**
 * XRPC errors of proposal 0016's `com.atproto.space.*` and `com.atproto.simplespace.*` methods
 * (the names their lexicons declare), plus the XRPC-standard ones the methods also answer.
 */

/** HTTP status of each error name. */
export const SPACE_ERROR_STATUS = {
  InvalidRequest: 400,
  AuthenticationRequired: 401,
  /** The caller's grant does not cover this space or operation (the `space:` scope). */
  InsufficientScope: 403,
  SpaceNotFound: 404,
  RepoNotFound: 404,
  BlobNotFound: 404,
  RepoTakendown: 400,
  RepoSuspended: 400,
  RepoDeactivated: 400,
  NotSpaceOwner: 403,
  SpaceAlreadyExists: 409,
  UnsupportedPolicy: 400,
  UnsupportedAppAccess: 400,
} as const

export type SpaceErrorName = keyof typeof SPACE_ERROR_STATUS

/** An error of a 0016 method: `{ error, message }` with its status. */
export class SpaceError extends Error {
  override readonly name = 'SpaceError'
  readonly status: number

  constructor(
    readonly error: SpaceErrorName,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options)
    this.status = SPACE_ERROR_STATUS[error]
  }

  /** The XRPC error body. */
  toJSON(): { error: SpaceErrorName; message: string } {
    return { error: this.error, message: this.message }
  }
}
