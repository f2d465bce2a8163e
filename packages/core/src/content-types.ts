/** Content types of the frames of an exportAccount stream, in the order the proposal requires (section 2.1). */
export const CONTENT_TYPE = {
  repoCar: 'application/vnd.ipld.car',
  blobpack: 'application/vnd.atproto.transfer.blobpack',
  preferences: 'application/vnd.atproto.preferences+json',
  accountState: 'application/vnd.atproto.transfer.account-state+cbor',
  /** Extension `end-manifest` (spec/extensions.md): always the last frame when negotiated. */
  endManifest: 'application/vnd.atproto.transfer.end-manifest+cbor',
} as const

export type ContentType = (typeof CONTENT_TYPE)[keyof typeof CONTENT_TYPE]

/** Position of each content type in the stream; a frame may not go back to an earlier kind. */
export const CONTENT_TYPE_ORDER: readonly string[] = [
  CONTENT_TYPE.repoCar,
  CONTENT_TYPE.blobpack,
  CONTENT_TYPE.preferences,
  CONTENT_TYPE.accountState,
  CONTENT_TYPE.endManifest,
]
