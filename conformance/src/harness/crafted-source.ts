import {
  FrameEncoder,
  jwkPublicKeyBytes,
  NSID,
  parseTransferPublicJwk,
  setupSender,
  type TransferAlgorithm,
} from '@pds-transfer/core'
import type { SourceClient } from '@pds-transfer/destination'

/** One frame a crafted source sends: any content type, any bytes, correctly encrypted. */
export interface CraftedFrame {
  contentType: string
  bytes: Uint8Array
}

/** The exportAccount request as the crafted source received it. */
export interface ExportRequest {
  did: string
  transferId: string
  algorithm: TransferAlgorithm
}

/**
 * A hostile (or buggy) source in-process: answers exportAccount with whatever frames the test
 * builds, encrypted correctly for the destination's key, so that only the content is wrong.
 * Other calls go to `fallback` (usually the real source's client).
 */
export function craftedSourceClient(
  fallback: SourceClient,
  frames: (request: ExportRequest) => Promise<CraftedFrame[]> | CraftedFrame[],
): SourceClient {
  return {
    url: fallback.url,
    async fetch(path, init) {
      if (path !== `/xrpc/${NSID.exportAccount}`) return fallback.fetch(path, init)
      const body = JSON.parse(String(init?.body)) as ExportRequest & { encryptionKey: unknown }
      const key = parseTransferPublicJwk(body.encryptionKey)
      const { enc, keys } = await setupSender({
        algorithm: body.algorithm,
        recipientPublicKey: jwkPublicKeyBytes(key),
        did: body.did,
        transferId: body.transferId,
      })
      const list = await frames(body)
      const encoder = new FrameEncoder(keys)
      async function* stream() {
        for (const f of list) yield* encoder.encodeFrame(f.contentType, f.bytes, f.bytes.length)
      }
      return new Response(ReadableStream.from(stream()), {
        status: 200,
        headers: {
          'content-type': 'application/octet-stream',
          'atproto-transfer-enc': Buffer.from(enc).toString('base64url'),
          'atproto-transfer-algorithm': body.algorithm,
        },
      })
    },
  }
}

/** Wraps a client so the exportAccount response body passes through `transform` (tampering tests). */
export function tamperingClient(
  inner: SourceClient,
  transform: (body: AsyncIterable<Uint8Array>) => AsyncIterable<Uint8Array>,
  rewriteRequest: (body: Record<string, unknown>) => Record<string, unknown> = (b) => b,
): SourceClient {
  return {
    url: inner.url,
    async fetch(path, init) {
      if (path !== `/xrpc/${NSID.exportAccount}`) return inner.fetch(path, init)
      const request = rewriteRequest(JSON.parse(String(init?.body)) as Record<string, unknown>)
      const res = await inner.fetch(path, { ...init, body: JSON.stringify(request) })
      if (!res.body) return res
      return new Response(ReadableStream.from(transform(res.body)), {
        status: res.status,
        headers: res.headers,
      })
    },
  }
}

/** Passes a byte stream through `edit`, which sees each chunk with its offset in the stream. */
export async function* atOffsets(
  body: AsyncIterable<Uint8Array>,
  edit: (offset: number, chunk: Uint8Array) => Uint8Array,
): AsyncGenerator<Uint8Array> {
  let offset = 0
  for await (const chunk of body) {
    const out = edit(offset, chunk)
    offset += chunk.length
    yield out
  }
}

/** A whole encrypted frame as it is on the wire (header + ciphertext + tag). */
export interface RawFrame {
  frameNumber: number
  contentType: string
  bytes: Uint8Array
}

/** Splits a (test-sized) response body into its frames using only the clear headers. */
export async function rawFrames(body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<RawFrame[]> {
  const chunks: Uint8Array[] = []
  for await (const c of body) chunks.push(c)
  const all = Buffer.concat(chunks)
  const frames: RawFrame[] = []
  let at = 0
  while (at < all.length) {
    const frameNumber = all.readUInt32BE(at)
    const typeLength = all.readUInt32BE(at + 4)
    const contentType = all.subarray(at + 8, at + 8 + typeLength).toString('utf8')
    const ctLength = all.readUInt32BE(at + 8 + typeLength)
    const end = at + 12 + typeLength + ctLength
    frames.push({ frameNumber, contentType, bytes: all.subarray(at, end) })
    at = end
  }
  return frames
}

/** Wraps a client so the test can rewrite the list of raw frames of the export response. */
export function frameRewritingClient(
  inner: SourceClient,
  rewrite: (frames: RawFrame[]) => Uint8Array[],
): SourceClient {
  return tamperingClient(inner, async function* (body) {
    yield* rewrite(await rawFrames(body))
  })
}
