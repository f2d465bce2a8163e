/**
 * One archive object, sealed: the plaintext (zstd-compressed when asked) encrypted to the
 * archive's X25519 key with @pds-transfer/core's HPKE key schedule and frame format, the same
 * code and vectors as a transfer stream (spec/archive-format.md):
 *
 *   header (8 bytes: "ATAR", version 1, suite 3|4, compression 0|1, 0) || enc (32 bytes) ||
 *   frames 0..n-1 of the object's content type (at most 1 MiB each) || one end frame
 *
 * The exporter context binds the keys to the account DID, the header and the object's key, so
 * an object moved to another name, another account or another header fails to decrypt. The end
 * frame carries the plaintext's size and SHA-256: a cut at a frame boundary, a dropped or a
 * reordered frame is refused. Memory is bounded by one frame whatever the object's size.
 */
import { createHash } from 'node:crypto'
import { Readable, type Transform } from 'node:stream'
import { constants, createZstdCompress, createZstdDecompress } from 'node:zlib'
import { decode, encode } from '@atproto/lex-cbor'
import {
  ByteReader,
  decodeFrames,
  FrameEncoder,
  setupRecipient,
  setupSender,
  type TransferAlgorithm,
} from '@pds-transfer/core'
import { ArchiveError } from './archive-error.ts'
import { type ArchiveKeys, encryptionPrivateKey, encryptionPublicKey } from './archive-keys.ts'

/** Content type of the frame that ends every sealed object. */
export const SEALED_END_TYPE = 'application/vnd.atproto.archive.end+cbor'
/** Largest plaintext of one frame of a sealed object. */
export const SEALED_FRAME_BYTES = 1 << 20

const MAGIC = [0x41, 0x54, 0x41, 0x52] // "ATAR"
const VERSION = 1
const HEADER_LENGTH = 8
const ENC_LENGTH = 32
const SUITE_BYTE: Record<TransferAlgorithm, number> = { 'HPKE-3': 3, 'HPKE-4': 4 }

/** Where an object belongs and what it holds; the same on sealing and on opening. */
export interface ObjectAddress {
  /** The account the object belongs to. */
  did: string
  /** The object's key in the store (`<did>/blobs/<cid>`, ...). */
  key: string
  /** Content type of its frames (a CAR, a blob, preferences JSON). */
  contentType: string
}

/** Seals `plaintext` for `address`; `ikmE` fixes the HPKE ephemeral key (test vectors only). */
export async function* sealObject(
  keys: ArchiveKeys,
  address: ObjectAddress & { compress: boolean; ikmE?: Uint8Array },
  plaintext: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  const header = objectHeader(keys.encryption.alg, address.compress)
  const { enc, keys: frameKeys } = await setupSender({
    algorithm: keys.encryption.alg,
    recipientPublicKey: encryptionPublicKey(keys),
    did: address.did,
    transferId: sessionId(header, address.key),
    ...(address.ikmE && { ikmE: address.ikmE }),
  })
  yield header
  yield enc
  const encoder = new FrameEncoder(frameKeys)
  const digest = createHash('sha256')
  let size = 0
  async function* counted(): AsyncGenerator<Uint8Array> {
    for await (const chunk of plaintext) {
      digest.update(chunk)
      size += chunk.length
      yield chunk
    }
  }
  const body = address.compress
    ? through(counted(), createZstdCompress({ params: { [constants.ZSTD_c_compressionLevel]: 3 } }))
    : counted()
  for await (const frame of gather(body as AsyncIterable<Uint8Array>, SEALED_FRAME_BYTES)) {
    yield* encoder.encodeFrame(address.contentType, frame, frame.length)
  }
  const end = encode({ size, sha256: new Uint8Array(digest.digest()) })
  yield* encoder.encodeFrame(SEALED_END_TYPE, end, end.length)
}

/**
 * The plaintext of a sealed object, checked as it is read. Chunks are provisional, as a
 * transfer frame's are: the iteration ends normally only once every tag, the end frame's size
 * and SHA-256 have verified; otherwise it throws `ObjectCorrupt` (or `InvalidKey` for a key
 * that cannot open it). Keep what you read apart until then.
 */
export async function* openObject(
  keys: ArchiveKeys,
  address: ObjectAddress,
  sealed: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  const reader = new ByteReader(sealed)
  const header = await reader.readExact(HEADER_LENGTH)
  const enc = header && (await reader.readExact(ENC_LENGTH))
  if (!header || !enc) throw corrupt(address, 'shorter than its header')
  if (MAGIC.some((b, i) => header[i] !== b) || header[4] !== VERSION)
    throw corrupt(address, 'not a sealed archive object (bad magic or version)')
  const algorithm = header[5] === 3 ? 'HPKE-3' : header[5] === 4 ? 'HPKE-4' : undefined
  if (!algorithm || header[6]! > 1 || header[7] !== 0) throw corrupt(address, 'unknown suite or compression')
  if (algorithm !== keys.encryption.alg)
    throw new ArchiveError(
      'InvalidKey',
      `${address.key} is sealed with ${algorithm}, the key is ${keys.encryption.alg}`,
    )
  let frameKeys: Awaited<ReturnType<typeof setupRecipient>>
  try {
    frameKeys = await setupRecipient({
      algorithm,
      recipientPrivateKey: encryptionPrivateKey(keys),
      enc,
      did: address.did,
      transferId: sessionId(header, address.key),
    })
  } catch (err) {
    if (err instanceof ArchiveError) throw err
    throw corrupt(address, (err as Error).message, err)
  }

  const digest = createHash('sha256')
  let size = 0
  let end: { size?: unknown; sha256?: unknown } | undefined
  async function* content(): AsyncGenerator<Uint8Array> {
    const rest = (async function* () {
      for (let chunk = await reader.readUpTo(1 << 20); chunk; chunk = await reader.readUpTo(1 << 20))
        yield chunk
    })()
    for await (const frame of decodeFrames(rest, {
      keys: frameKeys,
      maxCiphertextLength: SEALED_FRAME_BYTES + 16,
    })) {
      if (end) throw corrupt(address, `frame ${frame.frameNumber} after the end frame`)
      if (frame.contentType === SEALED_END_TYPE) {
        const parts: Uint8Array[] = []
        for await (const p of frame.plaintext()) parts.push(p)
        end = decode(Buffer.concat(parts)) as unknown as typeof end
      } else if (frame.contentType !== address.contentType) {
        throw corrupt(address, `holds ${frame.contentType}, expected ${address.contentType}`)
      } else {
        yield* frame.plaintext()
      }
    }
    if (!end) throw corrupt(address, 'cut short: no end frame')
  }
  const plain = header[6] === 1 ? through(content(), createZstdDecompress()) : content()
  try {
    for await (const chunk of plain as AsyncIterable<Uint8Array>) {
      digest.update(chunk)
      size += chunk.length
      yield chunk
    }
  } catch (err) {
    if (err instanceof ArchiveError) throw err
    throw corrupt(address, (err as Error).message, err)
  }
  const sha = end?.sha256
  if (end?.size !== size || !(sha instanceof Uint8Array) || !Buffer.from(sha).equals(digest.digest()))
    throw corrupt(address, 'the plaintext does not match the size and SHA-256 sealed with it')
}

/** `source` through a zlib transform; an error on either side ends both. */
function through(source: AsyncIterable<Uint8Array>, transform: Transform): AsyncIterable<Uint8Array> {
  const input = Readable.from(source, { objectMode: false })
  input.on('error', (err) => transform.destroy(err))
  transform.on('close', () => input.destroy())
  return input.pipe(transform)
}

function objectHeader(alg: TransferAlgorithm, compress: boolean): Uint8Array {
  return Uint8Array.from([...MAGIC, VERSION, SUITE_BYTE[alg], compress ? 1 : 0, 0])
}

/** The exporter context's "transferId" of an object: its header and its key. */
function sessionId(header: Uint8Array, key: string): string {
  return `archive:${Buffer.from(header).toString('hex')}:${key}`
}

/** Chunks regrouped into pieces of exactly `size` bytes (the last one shorter). */
async function* gather(source: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Uint8Array> {
  let parts: Uint8Array[] = []
  let have = 0
  for await (const chunk of source) {
    let offset = 0
    while (offset < chunk.length) {
      const take = Math.min(size - have, chunk.length - offset)
      parts.push(chunk.subarray(offset, offset + take))
      have += take
      offset += take
      if (have === size) {
        yield Buffer.concat(parts, have)
        parts = []
        have = 0
      }
    }
  }
  if (have > 0) yield Buffer.concat(parts, have)
}

function corrupt(address: ObjectAddress, why: string, cause?: unknown): ArchiveError {
  return new ArchiveError(
    'ObjectCorrupt',
    `${address.key}: ${why}`,
    cause === undefined ? undefined : { cause },
  )
}
