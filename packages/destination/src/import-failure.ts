import type { FailureReason } from './inbound-transfer.ts'

/** Why an inbound transfer stopped; `reason` is what its status shows. */
export class ImportFailure extends Error {
  override readonly name = 'ImportFailure'
  constructor(
    readonly reason: FailureReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}
