import { generateKeyPairSync } from 'node:crypto'
import type { TransferAlgorithm } from '../src/algorithms.ts'
import { FrameEncoder, type FramePlaintext } from '../src/frame-encoder.ts'
import { type FrameKeys, setupRecipient, setupSender } from '../src/key-schedule.ts'

export const DID = 'did:plc:abc123'
export const TRANSFER_ID = '019537a1-7e28-7def-8c56-3a8b69e2d471'

/** A fresh X25519 key pair as raw 32-byte strings. */
export function x25519Pair(): { publicKey: Uint8Array; privateKey: Uint8Array } {
  const { publicKey, privateKey } = generateKeyPairSync('x25519')
  const pub = publicKey.export({ format: 'jwk' })
  const priv = privateKey.export({ format: 'jwk' })
  return {
    publicKey: Uint8Array.from(Buffer.from(pub.x!, 'base64url')),
    privateKey: Uint8Array.from(Buffer.from(priv.d!, 'base64url')),
  }
}

/** Both ends of one session. */
export async function session(
  algorithm: TransferAlgorithm = 'HPKE-3',
): Promise<{ sender: FrameKeys; recipient: FrameKeys; enc: Uint8Array }> {
  const pair = x25519Pair()
  const { enc, keys } = await setupSender({
    algorithm,
    recipientPublicKey: pair.publicKey,
    did: DID,
    transferId: TRANSFER_ID,
  })
  const recipient = await setupRecipient({
    algorithm,
    recipientPrivateKey: pair.privateKey,
    enc,
    did: DID,
    transferId: TRANSFER_ID,
  })
  return { sender: keys, recipient, enc }
}

/** Encodes frames into one byte array. */
export async function encodeAll(
  keys: FrameKeys,
  frames: { type: string; data: FramePlaintext; length?: number }[],
): Promise<Uint8Array> {
  const encoder = new FrameEncoder(keys)
  const out: Uint8Array[] = []
  for (const f of frames) {
    const length = f.length ?? (f.data instanceof Uint8Array ? f.data.length : 0)
    for await (const chunk of encoder.encodeFrame(f.type, f.data, length)) out.push(Uint8Array.from(chunk))
  }
  return Buffer.concat(out)
}

/** Yields `bytes` in pieces of `size` (the last may be shorter). */
export async function* chunked(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size)
}

export function randomBytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n)
  let x = seed >>> 0 || 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}
