/** Refusal of an engine call (not a transfer failure); `code` names it. */
export class EngineError extends Error {
  override readonly name = 'EngineError'
  constructor(
    readonly code:
      | 'LimitExceeded'
      | 'AccountAlreadyActive'
      | 'TransferNotFound'
      | 'InvalidState'
      | 'SourceMismatch'
      | 'ActivationFailed'
      | 'InvalidRotationKey'
      /** The password the user chose cannot be used here (length, or no password support). */
      | 'InvalidPassword'
      /** The email the user gave for a restored account is not an address. */
      | 'InvalidEmail'
      /** The source did not answer during completion; the transfer waits for a retry. */
      | 'SourceUnreachable'
      /** The PLC directory did not answer; the checked operation is kept and submitted on retry. */
      | 'PlcUnreachable'
      /** The user's rotation key cannot take the identity back (`RestoreRefusal` says why and what is left). */
      | 'RecoveryImpossible',
    message: string,
  ) {
    super(message)
  }
}
