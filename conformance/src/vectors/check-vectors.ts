import {
  decodeFrames,
  hpkeSuite,
  readBlobpack,
  setupRecipient,
  type TransferAlgorithm,
  WireError,
} from '@pds-transfer/core'
import { type ArchiveVectors, checkArchiveVectors } from './archive-vectors.ts'
import type { BlobpackNegativeVector, FrameNegativeVector } from './negative-vectors.ts'
import type { TransferVector } from './transfer-vectors.ts'
import { buildVectorDocuments, FILES, readVectorFile, serialize } from './vector-files.ts'

export interface VectorResult {
  file: string
  name: string
  pass: boolean
  detail: string
}

const fromHex = (s: string) => Uint8Array.from(Buffer.from(s, 'hex'))
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')

async function* once(bytes: Uint8Array) {
  yield bytes
}

/** Decodes a stream with the recipient key of `v`; returns frames verified and the error reason (if any). */
async function decodeStream(
  v: Pick<TransferVector, 'algorithm' | 'skR' | 'enc'>,
  did: string,
  transferId: string,
  stream: string,
): Promise<{ frames: { contentType: string; plaintext: string }[]; error: string | null }> {
  const keys = await setupRecipient({
    algorithm: v.algorithm as TransferAlgorithm,
    recipientPrivateKey: fromHex(v.skR),
    enc: fromHex(v.enc),
    did,
    transferId,
  })
  const frames: { contentType: string; plaintext: string }[] = []
  try {
    for await (const frame of decodeFrames(once(fromHex(stream)), { keys })) {
      const parts: Uint8Array[] = []
      for await (const chunk of frame.plaintext()) parts.push(Uint8Array.from(chunk))
      frames.push({ contentType: frame.contentType, plaintext: hex(Buffer.concat(parts)) })
    }
    return { frames, error: null }
  } catch (err) {
    if (err instanceof WireError) return { frames, error: err.reason }
    throw err
  }
}

interface RfcVector {
  name: string
  aead_id: number
  info: string
  ikmE: string
  ikmR: string
  pkRm: string
  enc: string
  exports: { exporter_context: string; L: number; exported_value: string }[]
}

/** RFC 9180 base-mode vector through the same HPKE suite objects our key schedule uses. */
async function checkRfc(v: RfcVector): Promise<string | undefined> {
  const suite = hpkeSuite(v.aead_id === 1 ? 'HPKE-3' : 'HPKE-4')
  const recipient = await suite.kem.deriveKeyPair(fromHex(v.ikmR))
  if (hex(new Uint8Array(await suite.kem.serializePublicKey(recipient.publicKey))) !== v.pkRm)
    return 'pkRm differs'
  const sender = await suite.createSenderContext({
    recipientPublicKey: recipient.publicKey,
    info: fromHex(v.info),
    ekm: await suite.kem.deriveKeyPair(fromHex(v.ikmE)),
  })
  if (hex(new Uint8Array(sender.enc)) !== v.enc) return 'enc differs'
  const receiver = await suite.createRecipientContext({
    recipientKey: recipient,
    enc: fromHex(v.enc),
    info: fromHex(v.info),
  })
  for (const e of v.exports) {
    const value = hex(new Uint8Array(await receiver.export(fromHex(e.exporter_context), e.L)))
    if (value !== e.exported_value) return `export for context ${e.exporter_context || '(empty)'} differs`
  }
  return undefined
}

async function checkTransfer(v: TransferVector): Promise<string | undefined> {
  const { frames, error } = await decodeStream(v, v.did, v.transferId, v.stream)
  if (error) return `decoding failed: ${error}`
  if (frames.length !== v.frames.length) return `${frames.length} frames decoded, ${v.frames.length} expected`
  for (const [i, f] of v.frames.entries()) {
    if (frames[i]!.plaintext !== f.plaintext || frames[i]!.contentType !== f.contentType)
      return `frame ${i} differs`
  }
  return undefined
}

async function checkFrameNegative(
  v: FrameNegativeVector,
  bases: TransferVector[],
): Promise<string | undefined> {
  const base = bases.find((b) => b.name === v.base)
  if (!base) return `unknown base vector ${v.base}`
  const { frames, error } = await decodeStream(base, v.did, v.transferId, v.stream)
  if (error !== v.expectedError)
    return `got ${error ?? 'no error'}, expected ${v.expectedError ?? 'no error'}`
  if (frames.length !== v.framesBeforeError)
    return `${frames.length} frames before the error, ${v.framesBeforeError} expected`
  return undefined
}

async function checkBlobpackNegative(v: BlobpackNegativeVector): Promise<string | undefined> {
  try {
    await readBlobpack(once(fromHex(v.plaintext)), {
      ...(v.maxBlobSize !== undefined && { maxBlobSize: v.maxBlobSize }),
      ...(v.rejectEmptyBlobs !== undefined && { rejectEmptyBlobs: v.rejectEmptyBlobs }),
      onBlob: () => ({ write() {}, end() {}, abort() {} }),
    })
    return `accepted, expected ${v.expectedError}`
  } catch (err) {
    if (!(err instanceof WireError)) throw err
    return err.reason === v.expectedError ? undefined : `got ${err.reason}, expected ${v.expectedError}`
  }
}

/**
 * Checks this implementation against the committed vector files: decodes every
 * positive vector, provokes every negative one, and confirms that recomputing
 * the vectors from their fixed inputs gives the committed bytes.
 */
export async function checkVectors(): Promise<VectorResult[]> {
  const results: VectorResult[] = []
  const record = (file: string, name: string, failure: string | undefined, ok = 'ok') =>
    results.push({ file, name, pass: failure === undefined, detail: failure ?? ok })

  const rfc = await readVectorFile<{ vectors: RfcVector[] }>(FILES.rfc9180)
  for (const v of rfc.vectors) record(FILES.rfc9180, v.name, await checkRfc(v), 'enc and exports match')
  const transfer = await readVectorFile<{ vectors: TransferVector[] }>(FILES.transfer)
  for (const v of transfer.vectors)
    record(FILES.transfer, v.name, await checkTransfer(v), 'all frames decrypt')
  const negative = await readVectorFile<{
    frameVectors: FrameNegativeVector[]
    blobpackVectors: BlobpackNegativeVector[]
  }>(FILES.negative)
  for (const v of negative.frameVectors) {
    record(
      FILES.negative,
      `frame: ${v.name}`,
      await checkFrameNegative(v, transfer.vectors),
      v.expectedError ?? 'accepted',
    )
  }
  for (const v of negative.blobpackVectors) {
    record(FILES.negative, `blobpack: ${v.name}`, await checkBlobpackNegative(v), v.expectedError)
  }
  const archive = await readVectorFile<ArchiveVectors>(FILES.archive)
  for (const r of await checkArchiveVectors(archive)) record(FILES.archive, r.name, r.failure)
  const rebuilt = await buildVectorDocuments()
  for (const [file, doc] of Object.entries(rebuilt)) {
    const committed = serialize(await readVectorFile(file))
    record(
      file,
      'recomputed from fixed inputs',
      committed === serialize(doc) ? undefined : 'differs from the committed file',
      'byte-identical',
    )
  }
  return results
}
