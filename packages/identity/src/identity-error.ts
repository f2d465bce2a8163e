/** Why an identity operation cannot be made, each with what the person can still do. */
export type IdentityErrorReason =
  /** A key file that is malformed, or whose private and public parts do not match. */
  | 'InvalidKeyFile'
  /** The key was never among the identity's rotation keys. */
  | 'NoUserKey'
  /** The change to undo was signed by a key ranked above (or equal to) the user's. */
  | 'KeyTooWeak'
  /** The change to undo is older than the 72 hours in which PLC lets a higher key undo it. */
  | 'WindowClosed'
  /** The identity was deleted (tombstoned) at PLC. */
  | 'Tombstoned'
  /** The identity already has as many rotation keys as PLC allows (5). */
  | 'KeyLimit'
  /** The PDS did not accept the emailed code (wrong, used or expired): a new one must be asked for. */
  | 'InvalidCode'
  /** The PDS refused a sign-in, a code or an operation (its own words in the message). */
  | 'PdsRefused'
  /** The operation the PDS signed changes more than was asked; it was not submitted. */
  | 'UnexpectedOperation'
  /** The text to sign is not a restore challenge (the CLI signs nothing else). */
  | 'InvalidChallenge'

export class IdentityError extends Error {
  override readonly name = 'IdentityError'
  constructor(
    readonly reason: IdentityErrorReason,
    message: string,
    /** What is still possible, in words. */
    readonly next: string,
  ) {
    super(message)
  }
}
