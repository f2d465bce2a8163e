/** Size limits of the wire format and the defaults we apply where the proposal leaves a choice. */
export const LIMITS = {
  /** ciphertext_length is a uint32 (section 2.5). */
  maxCiphertextLength: 0xffff_ffff,
  /** AEAD tag appended to every frame's ciphertext (AES-GCM and ChaCha20-Poly1305). */
  tagLength: 16,
  /** Our bound on content_type_length: real types are < 64 bytes; anything longer is a malformed stream. */
  maxContentTypeLength: 256,
  /** Blobpack CID_length bound the addendum recommends. */
  maxBlobpackCidLength: 512,
  /** Default per-blob size limit a receiver applies to blobpack entries (the reference PDS default is 100 MB). */
  defaultMaxBlobSize: 100 * 1024 * 1024,
} as const

/** Largest plaintext one frame can carry: the uint32 ciphertext length minus the tag. */
export const MAX_FRAME_PLAINTEXT = LIMITS.maxCiphertextLength - LIMITS.tagLength
