import { BLOBPACK_HEADER_LENGTH, blobCid, CONTENT_TYPE, encodeFrameHeader } from '@pds-transfer/core'
import { type TransferVector, vectorBlobs } from './transfer-vectors.ts'

/** A stream a receiver must refuse, and how. */
export interface FrameNegativeVector {
  name: string
  description: string
  /** Name of the positive vector whose keys (skR, enc) decrypt this stream. */
  base: string
  /** The did and transferId the receiver expects (may differ from the sender's). */
  did: string
  transferId: string
  stream: string
  /** WireError reason, or null when the stream is indistinguishable from a valid one (see the description). */
  expectedError: string | null
  /** Frames that decode and verify before the error. */
  framesBeforeError: number
}

/** A blobpack plaintext a receiver must refuse. */
export interface BlobpackNegativeVector {
  name: string
  description: string
  plaintext: string
  /** Receiver's per-blob size limit for this case, if it matters. */
  maxBlobSize?: number
  rejectEmptyBlobs?: boolean
  expectedError: string
}

const fromHex = (s: string) => Uint8Array.from(Buffer.from(s, 'hex'))
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')

export function buildFrameNegatives(v: TransferVector): FrameNegativeVector[] {
  const frames = v.frames.map((f) => fromHex(f.frame))
  const join = (parts: Uint8Array[]) => hex(Buffer.concat(parts))
  const flip = (bytes: Uint8Array, at: number) => {
    const out = Uint8Array.from(bytes)
    out[at]! ^= 0x01
    return out
  }
  const headerLength = (i: number) => 12 + Buffer.byteLength(v.frames[i]!.contentType)
  const renumbered = Uint8Array.from(frames[1]!)
  new DataView(renumbered.buffer).setUint32(0, 2)
  const retyped = Buffer.concat([
    encodeFrameHeader({
      frameNumber: 1,
      contentType: CONTENT_TYPE.preferences,
      ciphertextLength: frames[1]!.length - headerLength(1),
    }),
    frames[1]!.subarray(headerLength(1)),
  ])
  const longType = Uint8Array.from(frames[0]!)
  new DataView(longType.buffer).setUint32(4, 0x10000)
  const common = { base: v.name, did: v.did, transferId: v.transferId }
  return [
    {
      name: 'ciphertext-bit-flip',
      description: 'one bit of frame 1 ciphertext flipped',
      ...common,
      stream: join([frames[0]!, flip(frames[1]!, headerLength(1) + 3), frames[2]!, frames[3]!]),
      expectedError: 'FrameAuthFailed',
      framesBeforeError: 1,
    },
    {
      name: 'tag-bit-flip',
      description: 'last bit of frame 0 tag flipped',
      ...common,
      stream: join([flip(frames[0]!, frames[0]!.length - 1), ...frames.slice(1)]),
      expectedError: 'FrameAuthFailed',
      framesBeforeError: 0,
    },
    {
      name: 'frames-reordered',
      description: 'frames 0 and 1 swapped',
      ...common,
      stream: join([frames[1]!, frames[0]!, frames[2]!, frames[3]!]),
      expectedError: 'FrameOutOfOrder',
      framesBeforeError: 0,
    },
    {
      name: 'frame-number-skipped',
      description: 'frame 1 header says 2',
      ...common,
      stream: join([frames[0]!, renumbered, frames[2]!, frames[3]!]),
      expectedError: 'FrameOutOfOrder',
      framesBeforeError: 1,
    },
    {
      name: 'content-type-swapped',
      description: 'frame 1 relabelled as preferences with its ciphertext unchanged (type confusion)',
      ...common,
      stream: join([frames[0]!, retyped, frames[2]!, frames[3]!]),
      expectedError: 'FrameAuthFailed',
      framesBeforeError: 1,
    },
    {
      name: 'other-account',
      description: 'the receiver expects another DID (cross-account substitution)',
      ...common,
      did: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa',
      stream: v.stream,
      expectedError: 'FrameAuthFailed',
      framesBeforeError: 0,
    },
    {
      name: 'other-transfer',
      description: 'the receiver expects another transferId (cross-session replay)',
      ...common,
      transferId: '019537a1-7e28-7def-8c56-3a8b69e2d472',
      stream: v.stream,
      expectedError: 'FrameAuthFailed',
      framesBeforeError: 0,
    },
    {
      name: 'content-type-too-long',
      description: 'frame 0 content_type_length is 65536',
      ...common,
      stream: join([longType, ...frames.slice(1)]),
      expectedError: 'ContentTypeTooLong',
      framesBeforeError: 0,
    },
    {
      name: 'cut-in-header',
      description: 'stream ends 5 bytes into the header of frame 2',
      ...common,
      stream: join([frames[0]!, frames[1]!, frames[2]!.subarray(0, 5)]),
      expectedError: 'TruncatedHeader',
      framesBeforeError: 2,
    },
    {
      name: 'cut-in-ciphertext',
      description: 'stream ends one byte before the end of frame 3',
      ...common,
      stream: join([frames[0]!, frames[1]!, frames[2]!, frames[3]!.subarray(0, frames[3]!.length - 1)]),
      expectedError: 'TruncatedFrame',
      framesBeforeError: 3,
    },
    {
      name: 'cut-at-frame-boundary',
      description:
        'stream ends cleanly after frame 2: plain 0014 cannot tell this from a complete transfer (spec/errata.md E1); only the end-manifest extension or blob reconciliation catches it',
      ...common,
      stream: join(frames.slice(0, 3)),
      expectedError: null,
      framesBeforeError: 3,
    },
  ]
}

export function buildBlobpackNegatives(): BlobpackNegativeVector[] {
  const [blob] = vectorBlobs()
  const cid = blobCid(blob!).bytes
  const header = Uint8Array.from([0x41, 0x54, 0x50, 0x42, 0x01])
  const entry = (cidBytes: Uint8Array, data: Uint8Array, declared = data.length) => {
    const out = new Uint8Array(4 + cidBytes.length + 8 + data.length)
    const view = new DataView(out.buffer)
    view.setUint32(0, cidBytes.length)
    out.set(cidBytes, 4)
    view.setBigUint64(4 + cidBytes.length, BigInt(declared))
    out.set(data, 12 + cidBytes.length)
    return out
  }
  const pack = (...parts: Uint8Array[]) => hex(Buffer.concat(parts))
  const dagCborCid = Uint8Array.from(cid)
  dagCborCid[1] = 0x71
  const wrongData = Uint8Array.from(blob!)
  wrongData[0]! ^= 0x01
  const valid = entry(cid, blob!)
  if (BLOBPACK_HEADER_LENGTH !== header.length) throw new Error('blobpack header length changed')
  return [
    {
      name: 'bad-magic',
      description: 'magic is "ATPC"',
      plaintext: pack(Uint8Array.from([0x41, 0x54, 0x50, 0x43, 0x01]), valid),
      expectedError: 'BlobpackBadMagic',
    },
    {
      name: 'bad-version',
      description: 'version byte 2',
      plaintext: pack(Uint8Array.from([0x41, 0x54, 0x50, 0x42, 0x02]), valid),
      expectedError: 'BlobpackBadVersion',
    },
    {
      name: 'cid-length-513',
      description: 'CID_length 513 (over the 512 bound), rejected before the CID is read',
      plaintext: pack(header, Uint8Array.from([0, 0, 2, 1])),
      expectedError: 'BlobpackCidTooLong',
    },
    {
      name: 'cid-not-raw',
      description: 'CID with the dag-cbor codec',
      plaintext: pack(header, entry(dagCborCid, blob!)),
      expectedError: 'BlobpackBadCid',
    },
    {
      name: 'cid-mismatch',
      description: 'one bit of the blob data flipped',
      plaintext: pack(header, entry(cid, wrongData)),
      expectedError: 'BlobpackCidMismatch',
    },
    {
      name: 'blob-over-limit',
      description: 'blob of 14 bytes with a receiver limit of 10',
      plaintext: pack(header, valid),
      maxBlobSize: 10,
      expectedError: 'BlobpackBlobTooLarge',
    },
    {
      name: 'empty-blob-refused',
      description: 'zero-length blob where the receiver refuses them by policy',
      plaintext: pack(header, entry(blobCid(new Uint8Array(0)).bytes, new Uint8Array(0))),
      rejectEmptyBlobs: true,
      expectedError: 'BlobpackEmptyBlob',
    },
    {
      name: 'ends-inside-entry',
      description: 'plaintext ends 3 bytes before the end of the blob',
      plaintext: pack(header, valid.subarray(0, valid.length - 3)),
      expectedError: 'BlobpackTruncated',
    },
    {
      name: 'trailing-bytes',
      description: 'two stray bytes after the last entry (not an entry boundary)',
      plaintext: pack(header, valid, Uint8Array.from([0, 0])),
      expectedError: 'BlobpackTruncated',
    },
    {
      name: 'header-only-truncated',
      description: 'magic without a version byte',
      plaintext: pack(header.subarray(0, 4)),
      expectedError: 'BlobpackTruncated',
    },
  ]
}
