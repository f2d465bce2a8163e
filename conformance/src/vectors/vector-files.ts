import { readFile, writeFile } from 'node:fs/promises'
import { ARCHIVE_DOC, buildArchiveVectors } from './archive-vectors.ts'
import { buildBlobpackNegatives, buildFrameNegatives } from './negative-vectors.ts'
import { buildTransferVector } from './transfer-vectors.ts'

export const VECTORS_DIR = new URL('../../vectors/', import.meta.url)
export const FILES = {
  rfc9180: 'rfc9180-base.json',
  transfer: 'transfer-vectors.json',
  negative: 'negative-vectors.json',
  archive: 'archive-vectors.json',
} as const

const TRANSFER_DOC = {
  description:
    'Deterministic vectors of atproto proposal 0014 as pds-transfer implements it: fixed ikmR/ikmE, did and transferId; every intermediate value of the key schedule and each frame. Recompute them to check an implementation byte for byte.',
  fields: {
    algorithm:
      'HPKE-3 (AES-128-GCM) or HPKE-4 (ChaCha20-Poly1305); both DHKEM(X25519, HKDF-SHA256) + HKDF-SHA256',
    ikmR: 'input to DeriveKeyPair for the recipient (destination) key',
    skR: 'recipient private key (raw X25519), = JWK d',
    pkR: 'recipient public key (raw X25519), = JWK x',
    ikmE: 'input to DeriveKeyPair for the sender ephemeral key (fixed for vectors only)',
    enc: 'encapsulated key from SetupBaseS(pkR, info = "atproto-transfer-v1")',
    encBase64url: 'enc as sent in the Atproto-Transfer-Enc header (base64url, no padding)',
    exporterContext: '"atproto-transfer-v1" 0x00 did 0x00 transferId',
    transferSecret: 'Export(exporterContext, 32)',
    'frames[].key': 'HKDF-Expand(transferSecret, "atproto-frame-key" 0x00 uint32be(frameNumber), Nk)',
    'frames[].nonce': 'HKDF-Expand(transferSecret, "atproto-frame-nonce" 0x00 uint32be(frameNumber), Nn)',
    'frames[].aad':
      '"atproto-transfer-v1" 0x00 did 0x00 transferId 0x00 uint32be(frameNumber) 0x00 contentType',
    'frames[].frame':
      'uint32be frameNumber | uint32be len(contentType) | contentType | uint32be len(ct) | ct (= AEAD ciphertext || 16-byte tag)',
    stream: 'the exportAccount response body: the frames concatenated',
    'hex encoding': 'all byte values are lowercase hex unless the name says base64url',
  },
}

const NEGATIVE_DOC = {
  description:
    'Streams and blobpacks a 0014 receiver must refuse, each with the error pds-transfer gives (WireError reasons, packages/core/src/errors.ts). Frame vectors decrypt with the skR and enc of their base vector in transfer-vectors.json.',
  fields: {
    'frameVectors[].did / transferId':
      'what the receiver expects; may differ from the sender to test AAD binding',
    'frameVectors[].stream': 'response body, hex',
    'frameVectors[].framesBeforeError': 'frames that fully verify before the error',
    'frameVectors[].expectedError': 'reason; null = indistinguishable from a valid stream in plain 0014',
    'blobpackVectors[].plaintext': 'a blobpack frame plaintext, hex',
    'blobpackVectors[].maxBlobSize / rejectEmptyBlobs': 'receiver policy for that case',
  },
}

/** Every vector document, computed from the implementation. */
export async function buildVectorDocuments() {
  const transfer = [await buildTransferVector('HPKE-3'), await buildTransferVector('HPKE-4')]
  return {
    [FILES.transfer]: { ...TRANSFER_DOC, vectors: transfer },
    [FILES.negative]: {
      ...NEGATIVE_DOC,
      frameVectors: buildFrameNegatives(transfer[0]!),
      blobpackVectors: buildBlobpackNegatives(),
    },
    [FILES.archive]: { ...ARCHIVE_DOC, ...(await buildArchiveVectors()) },
  }
}

export async function readVectorFile<T>(name: string): Promise<T> {
  return JSON.parse(await readFile(new URL(name, VECTORS_DIR), 'utf8')) as T
}

export function serialize(doc: unknown): string {
  return `${JSON.stringify(doc, null, 2)}\n`
}

export async function writeVectorFiles(): Promise<string[]> {
  const docs = await buildVectorDocuments()
  for (const [name, doc] of Object.entries(docs)) await writeFile(new URL(name, VECTORS_DIR), serialize(doc))
  return Object.keys(docs)
}
