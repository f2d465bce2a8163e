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

/** Blobs the verified records use that the source could not give (the user may move without them). */
export function blobsMissing(cids: string[]): ImportFailure {
  return new ImportFailure(
    'BlobsMissing',
    `${cids.length} blobs the records use could not be had from the source: ${cids.join(', ')}`,
  )
}
