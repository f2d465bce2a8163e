import {
  blobCid,
  blobpackLength,
  CONTENT_TYPE,
  encodeAccountState,
  encodeBlobpack,
  exporterContext,
  FrameEncoder,
  frameAad,
  hpkeSuite,
  setupSender,
  type TransferAlgorithm,
} from '@pds-transfer/core'

/** One frame of a vector: every intermediate value, hex. */
export interface FrameVector {
  frameNumber: number
  contentType: string
  plaintext: string
  key: string
  nonce: string
  aad: string
  /** The whole frame as on the wire: header, ciphertext, tag. */
  frame: string
}

export interface TransferVector {
  name: string
  algorithm: TransferAlgorithm
  did: string
  transferId: string
  ikmR: string
  skR: string
  pkR: string
  ikmE: string
  /** Atproto-Transfer-Enc header value is base64url of this. */
  enc: string
  encBase64url: string
  exporterContext: string
  transferSecret: string
  frames: FrameVector[]
  /** The response body: all frames concatenated. */
  stream: string
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
const utf8 = new TextEncoder()

export const VECTOR_DID = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz'
export const VECTOR_TRANSFER_ID = '019537a1-7e28-7def-8c56-3a8b69e2d471'
/** Fixed inputs: anyone can recompute every vector from these. */
export const VECTOR_IKM_R = Uint8Array.from({ length: 32 }, (_, i) => i)
export const VECTOR_IKM_E = Uint8Array.from({ length: 32 }, (_, i) => 0xff - i)

/** Two small blobs, the contents of the blobpack frame. */
export function vectorBlobs(): Uint8Array[] {
  return [utf8.encode('hello, atproto'), Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff)]
}

/** The frames of the vector stream: a (tiny, opaque) CAR, a blobpack, preferences, private state. */
export async function vectorPlaintexts(): Promise<{ contentType: string; plaintext: Uint8Array }[]> {
  const entries = vectorBlobs().map((bytes) => ({
    cid: blobCid(bytes),
    size: bytes.length,
    open: async function* () {
      yield bytes
    },
  }))
  const pack: Uint8Array[] = []
  for await (const chunk of encodeBlobpack(entries)) pack.push(Uint8Array.from(chunk))
  const blobpack = Buffer.concat(pack)
  if (blobpack.length !== blobpackLength(entries)) throw new Error('blobpack length mismatch')
  return [
    // Frames are opaque to the cipher: a byte string stands in for the CAR here.
    { contentType: CONTENT_TYPE.repoCar, plaintext: utf8.encode('CAR bytes stand-in') },
    { contentType: CONTENT_TYPE.blobpack, plaintext: blobpack },
    {
      contentType: CONTENT_TYPE.preferences,
      plaintext: utf8.encode(
        JSON.stringify([{ $type: 'app.bsky.actor.defs#adultContentPref', enabled: false }]),
      ),
    },
    {
      contentType: CONTENT_TYPE.accountState,
      plaintext: encodeAccountState({ email: 'alice@example.com', emailConfirmed: true, inviteCodes: [] }),
    },
  ]
}

/** Computes the vector of one suite from the fixed inputs. */
export async function buildTransferVector(algorithm: TransferAlgorithm): Promise<TransferVector> {
  const suite = hpkeSuite(algorithm)
  const recipient = await suite.kem.deriveKeyPair(VECTOR_IKM_R)
  const pkR = new Uint8Array(await suite.kem.serializePublicKey(recipient.publicKey))
  const skR = new Uint8Array(await suite.kem.serializePrivateKey(recipient.privateKey))
  const { enc, keys } = await setupSender({
    algorithm,
    recipientPublicKey: pkR,
    did: VECTOR_DID,
    transferId: VECTOR_TRANSFER_ID,
    ikmE: VECTOR_IKM_E,
  })
  const encoder = new FrameEncoder(keys)
  const frames: FrameVector[] = []
  for (const [frameNumber, { contentType, plaintext }] of (await vectorPlaintexts()).entries()) {
    const parts: Uint8Array[] = []
    for await (const chunk of encoder.encodeFrame(contentType, plaintext, plaintext.length)) {
      parts.push(Uint8Array.from(chunk))
    }
    frames.push({
      frameNumber,
      contentType,
      plaintext: hex(plaintext),
      key: hex(keys.key(frameNumber)),
      nonce: hex(keys.nonce(frameNumber)),
      aad: hex(frameAad(VECTOR_DID, VECTOR_TRANSFER_ID, frameNumber, contentType)),
      frame: hex(Buffer.concat(parts)),
    })
  }
  return {
    name: `${algorithm}: CAR, blobpack, preferences, account state`,
    algorithm,
    did: VECTOR_DID,
    transferId: VECTOR_TRANSFER_ID,
    ikmR: hex(VECTOR_IKM_R),
    skR: hex(skR),
    pkR: hex(pkR),
    ikmE: hex(VECTOR_IKM_E),
    enc: hex(enc),
    encBase64url: Buffer.from(enc).toString('base64url'),
    exporterContext: hex(exporterContext(VECTOR_DID, VECTOR_TRANSFER_ID)),
    transferSecret: hex(keys.transferSecret),
    frames,
    stream: frames.map((f) => f.frame).join(''),
  }
}
