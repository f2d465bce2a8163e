import { AeadId } from 'hpke-js'
import { WireError } from './errors.ts'

/** The suites of section 1.3. Both use DHKEM(X25519, HKDF-SHA256) and HKDF-SHA256. */
export const ALGORITHMS = {
  'HPKE-3': {
    kem: 'DHKEM(X25519, HKDF-SHA256)',
    aead: 'AES-128-GCM',
    nk: 16,
    nn: 12,
    nodeCipher: 'aes-128-gcm',
  },
  'HPKE-4': {
    kem: 'DHKEM(X25519, HKDF-SHA256)',
    aead: 'ChaCha20Poly1305',
    nk: 32,
    nn: 12,
    nodeCipher: 'chacha20-poly1305',
  },
} as const

export type TransferAlgorithm = keyof typeof ALGORITHMS

export function isTransferAlgorithm(value: unknown): value is TransferAlgorithm {
  return typeof value === 'string' && Object.hasOwn(ALGORITHMS, value)
}

/** Throws `UnsupportedAlgorithm` unless `value` names a suite we implement. */
export function assertTransferAlgorithm(value: unknown): TransferAlgorithm {
  if (!isTransferAlgorithm(value))
    throw new WireError('UnsupportedAlgorithm', `unsupported algorithm ${String(value)}`)
  return value
}

/** hpke-js AEAD identifier of a suite. */
export function hpkeAeadId(algorithm: TransferAlgorithm): AeadId {
  return algorithm === 'HPKE-3' ? AeadId.Aes128Gcm : AeadId.Chacha20Poly1305
}
