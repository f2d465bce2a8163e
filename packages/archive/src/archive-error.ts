/** Every distinct way an archive can be refused; each names what a reader or `verify` found. */
export type ArchiveErrorReason =
  /** A key file or key that is malformed, or the wrong kind for the operation. */
  | 'InvalidKey'
  /** An object the manifests name is not in the store. */
  | 'ObjectMissing'
  /** An object's stored bytes differ from what its manifest recorded, or do not decrypt, or decompress. */
  | 'ObjectCorrupt'
  /** A manifest that does not decode, is not signed by the archive's key, or breaks the chain. */
  | 'ManifestInvalid'
  /** The archive holds nothing for this account. */
  | 'NoBackup'
  /** A key that names a path outside the store, or a name the store cannot hold. */
  | 'InvalidObjectKey'

/** An archive that cannot be read or written as asked; `reason` says which check failed. */
export class ArchiveError extends Error {
  override readonly name = 'ArchiveError'
  constructor(
    readonly reason: ArchiveErrorReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}
