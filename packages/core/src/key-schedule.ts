import type { webcrypto } from 'node:crypto'
import { CipherSuite, KdfId, KemId } from 'hpke-js'
import { ALGORITHMS, hpkeAeadId, type TransferAlgorithm } from './algorithms.ts'
import { WireError } from './errors.ts'
import { exporterContext, frameKeyInfo, TRANSFER_INFO } from './frame-aad.ts'
import { hkdfExpandSha256 } from './hkdf-expand.ts'

const utf8 = new TextEncoder()
const TRANSFER_SECRET_LENGTH = 32

/** The HPKE cipher suite of a transfer algorithm (all of ours use DHKEM(X25519, HKDF-SHA256) + HKDF-SHA256). */
export function hpkeSuite(algorithm: TransferAlgorithm): CipherSuite {
  return new CipherSuite({
    kem: KemId.DhkemX25519HkdfSha256,
    kdf: KdfId.HkdfSha256,
    aead: hpkeAeadId(algorithm),
  })
}

/**
 * Per-frame keys and nonces of one transfer session (section 2.4 step 4).
 *
 * Holds `transfer_secret`; never reuse across sessions. Frames are sealed with
 * node:crypto, not HPKE's own `seal`, which is pure JS and ~20x slower.
 */
export class FrameKeys {
  constructor(
    readonly algorithm: TransferAlgorithm,
    readonly did: string,
    readonly transferId: string,
    readonly transferSecret: Uint8Array,
  ) {
    if (transferSecret.length !== TRANSFER_SECRET_LENGTH)
      throw new RangeError('transfer_secret must be 32 bytes')
  }

  key(frameNumber: number): Uint8Array {
    return hkdfExpandSha256(
      this.transferSecret,
      frameKeyInfo('atproto-frame-key', frameNumber),
      ALGORITHMS[this.algorithm].nk,
    )
  }

  nonce(frameNumber: number): Uint8Array {
    return hkdfExpandSha256(
      this.transferSecret,
      frameKeyInfo('atproto-frame-nonce', frameNumber),
      ALGORITHMS[this.algorithm].nn,
    )
  }
}

export interface SenderSetup {
  /** Encapsulated key, sent base64url in the `Atproto-Transfer-Enc` header. */
  enc: Uint8Array
  keys: FrameKeys
}

/**
 * Source side: SetupBaseS(pkR, info) then Export(exporter_context, 32).
 * `ikmE` fixes the ephemeral key; only test vectors may pass it.
 */
export async function setupSender(params: {
  algorithm: TransferAlgorithm
  recipientPublicKey: Uint8Array
  did: string
  transferId: string
  ikmE?: Uint8Array
}): Promise<SenderSetup> {
  const suite = hpkeSuite(params.algorithm)
  const recipientPublicKey = await importKey(() => suite.kem.deserializePublicKey(params.recipientPublicKey))
  const ctx = await suite.createSenderContext({
    recipientPublicKey,
    info: utf8.encode(TRANSFER_INFO),
    ...(params.ikmE ? { ekm: await suite.kem.deriveKeyPair(params.ikmE) } : {}),
  })
  const secret = await ctx.export(exporterContext(params.did, params.transferId), TRANSFER_SECRET_LENGTH)
  return {
    enc: new Uint8Array(ctx.enc),
    keys: new FrameKeys(params.algorithm, params.did, params.transferId, new Uint8Array(secret)),
  }
}

/** Destination side: SetupBaseR(enc, skR, info) then the same Export. */
export async function setupRecipient(params: {
  algorithm: TransferAlgorithm
  recipientPrivateKey: Uint8Array
  enc: Uint8Array
  did: string
  transferId: string
}): Promise<FrameKeys> {
  const suite = hpkeSuite(params.algorithm)
  if (params.enc.length !== suite.kem.encSize) {
    throw new WireError('InvalidKey', `enc must be ${suite.kem.encSize} bytes, got ${params.enc.length}`)
  }
  const recipientKey = await importKey(() => suite.kem.deserializePrivateKey(params.recipientPrivateKey))
  const ctx = await suite
    .createRecipientContext({ recipientKey, enc: params.enc, info: utf8.encode(TRANSFER_INFO) })
    .catch((err: unknown) => {
      throw new WireError('InvalidKey', 'HPKE decapsulation failed for this enc', { cause: err })
    })
  const secret = await ctx.export(exporterContext(params.did, params.transferId), TRANSFER_SECRET_LENGTH)
  return new FrameKeys(params.algorithm, params.did, params.transferId, new Uint8Array(secret))
}

async function importKey(load: () => Promise<webcrypto.CryptoKey>): Promise<webcrypto.CryptoKey> {
  try {
    return await load()
  } catch (err) {
    throw new WireError('InvalidKey', 'not a valid X25519 key', { cause: err })
  }
}
