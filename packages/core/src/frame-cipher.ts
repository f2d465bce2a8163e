import { type CipherGCM, createCipheriv, createDecipheriv, type DecipherGCM } from 'node:crypto'
import type { TransferAlgorithm } from './algorithms.ts'
import { LIMITS } from './limits.ts'

/** AEAD interface common to node's GCM and ChaCha20-Poly1305 ciphers (same method set). */
export type FrameCipher = Pick<CipherGCM, 'update' | 'final' | 'setAAD' | 'getAuthTag'>
export type FrameDecipher = Pick<DecipherGCM, 'update' | 'final' | 'setAAD' | 'setAuthTag'>

/** node:crypto AEAD for one frame: streaming, native speed (section 2.4 step 5). */
export function createFrameCipher(
  algorithm: TransferAlgorithm,
  key: Uint8Array,
  nonce: Uint8Array,
): FrameCipher {
  const options = { authTagLength: LIMITS.tagLength }
  return algorithm === 'HPKE-3'
    ? createCipheriv('aes-128-gcm', key, nonce, options)
    : createCipheriv('chacha20-poly1305', key, nonce, options)
}

export function createFrameDecipher(
  algorithm: TransferAlgorithm,
  key: Uint8Array,
  nonce: Uint8Array,
): FrameDecipher {
  const options = { authTagLength: LIMITS.tagLength }
  return algorithm === 'HPKE-3'
    ? createDecipheriv('aes-128-gcm', key, nonce, options)
    : createDecipheriv('chacha20-poly1305', key, nonce, options)
}
