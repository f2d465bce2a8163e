import { type Keypair, Secp256k1Keypair } from '@atproto/crypto'
import { decode as cborDecode, encode as cborEncode } from '@atproto/lex-cbor'
import { blobCid, encodeBlobpack } from '@pds-transfer/core'
import { CID, varint } from 'multiformats'
import { fixtureBytes } from '../fixtures/build-account.ts'
import type { SqliteAccountStore } from '../store/sqlite-account-store.ts'
import { atOffsets, type RawFrame } from './crafted-source.ts'

/**
 * The building blocks of hostile exportAccount streams, shared by the hostile source server
 * (conformance suite) and the destination tests: each breaks exactly one property.
 */

/** A body transform flipping one bit of the byte at `at` (counted from the start of the body). */
export function flipBitAt(at: number) {
  return (body: AsyncIterable<Uint8Array>) =>
    atOffsets(body, (offset, chunk) => {
      const i = at - offset
      if (i < 0 || i >= chunk.length) return chunk
      const copy = Uint8Array.from(chunk)
      copy[i] = (copy[i] as number) ^ 1
      return copy
    })
}

/** A body transform that ends the stream after `bytes` bytes (inside a frame, for test sizes). */
export function cutAfter(bytes: number) {
  return async function* (body: AsyncIterable<Uint8Array>) {
    let n = 0
    for await (const c of body) {
      if (n + c.length >= bytes) {
        yield c.subarray(0, bytes - n)
        return
      }
      n += c.length
      yield c
    }
  }
}

/** A frame rewrite flipping the last bit of frame `index`'s tag. */
export function flipTagOf(index: number) {
  return (frames: RawFrame[]) =>
    frames.map((f, i) => {
      if (i !== index) return f.bytes
      const copy = Uint8Array.from(f.bytes)
      copy[copy.length - 1] = (copy[copy.length - 1] as number) ^ 0x80
      return copy
    })
}

/** A frame rewrite swapping frames `a` and `b`. */
export function swapFrames(a: number, b: number) {
  return (frames: RawFrame[]) => {
    const bytes = frames.map((f) => f.bytes)
    ;[bytes[a], bytes[b]] = [bytes[b] as Uint8Array, bytes[a] as Uint8Array]
    return bytes
  }
}

/**
 * A frame rewrite swapping frames `a` and `b` and renumbering their clear headers to their new
 * places: the numbering looks right, so only the nonce and AAD (sealed for the old place) differ.
 */
export function swapAndRenumber(a: number, b: number) {
  const swap = swapFrames(a, b)
  return (frames: RawFrame[]) =>
    swap(frames).map((bytes, i) => {
      const copy = Buffer.from(bytes)
      copy.writeUInt32BE(i, 0)
      return copy
    })
}

/** A signed repo for `did` whose commit is signed by a key that is not the DID's. */
export async function forgedCar(scratch: SqliteAccountStore, did: string): Promise<Uint8Array> {
  const forger = await Secp256k1Keypair.create()
  await scratch.createAccount({ did, signingKey: forger })
  await scratch.writeRecords(did, forger, [
    {
      collection: 'app.bsky.feed.post',
      rkey: '3kforged0000a',
      record: { $type: 'app.bsky.feed.post', text: 'forged', createdAt: new Date().toISOString() },
    },
  ])
  return scratch.exportCar(did)
}

/** A repo correctly signed with `signingKey` whose commit names `otherDid` instead of its account. */
export async function carForOtherDid(
  scratch: SqliteAccountStore,
  otherDid: string,
  signingKey: Keypair,
): Promise<Uint8Array> {
  await scratch.createAccount({ did: otherDid, signingKey })
  await scratch.writeRecords(otherDid, signingKey, [
    {
      collection: 'app.bsky.feed.post',
      rkey: '3kotherdid00a',
      record: { $type: 'app.bsky.feed.post', text: 'not yours', createdAt: new Date().toISOString() },
    },
  ])
  return scratch.exportCar(otherDid)
}

/**
 * The CAR with the first post record's block re-encoded with another text under its old CID: still
 * a valid record, so only hashing each block against its CID notices.
 */
export function carWithMismatchedBlock(car: Uint8Array): Uint8Array {
  const [headerLength, headerVarint] = varint.decode(car)
  const out: Uint8Array[] = [car.subarray(0, headerVarint + headerLength)]
  let altered = false
  for (let at = headerVarint + headerLength; at < car.length; ) {
    const [length, lengthVarint] = varint.decode(car, at)
    const start = at
    at += lengthVarint + length
    const [cid, bytes] = CID.decodeFirst(car.subarray(start + lengthVarint, at))
    const record = altered ? undefined : postRecord(bytes)
    if (!record) {
      out.push(car.subarray(start, at))
      continue
    }
    altered = true
    const body = cborEncode({ ...record, text: `${record.text} (altered)` })
    const size = cid.bytes.length + body.length
    out.push(varint.encodeTo(size, new Uint8Array(varint.encodingLength(size))), cid.bytes, body)
  }
  if (!altered) throw new Error('the CAR holds no post record to alter')
  return Buffer.concat(out)
}

function postRecord(bytes: Uint8Array): { text: string } | undefined {
  try {
    const value = cborDecode(bytes) as { $type?: unknown; text?: unknown }
    return value?.$type === 'app.bsky.feed.post' && typeof value.text === 'string'
      ? (value as { text: string })
      : undefined
  } catch {
    return undefined
  }
}

/** A blobpack with one entry declaring `real`'s CID but carrying other bytes of the same length. */
export async function wrongBytesBlobpack(real: Uint8Array): Promise<Uint8Array> {
  const wrong = fixtureBytes(real.length, 999)
  return collect(
    encodeBlobpack([
      {
        cid: blobCid(real),
        size: wrong.length,
        open: async function* () {
          yield wrong
        },
      },
    ]),
  )
}

/** The same frame with another content type in its clear header (ciphertext untouched). */
export function relabel(frame: RawFrame, contentType: string): Uint8Array {
  const ciphertext = frame.bytes.subarray(12 + Buffer.byteLength(frame.contentType))
  const type = Buffer.from(contentType)
  const header = Buffer.alloc(12 + type.length)
  header.writeUInt32BE(frame.frameNumber, 0)
  header.writeUInt32BE(type.length, 4)
  type.copy(header, 8)
  header.writeUInt32BE(ciphertext.length, 8 + type.length)
  return Buffer.concat([header, ciphertext])
}

export async function collect(source: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = []
  for await (const c of source) chunks.push(c)
  return Buffer.concat(chunks)
}
