import { NSID } from '@pds-transfer/core'
import { type LoopbackProxy, startBufferedProxy } from './buffered-proxy.ts'
import { type RawFrame, rawFrames } from './crafted-source.ts'

/** A reverse proxy on loopback that can rewrite the frames of exportAccount answers. */
export type RewritingProxy = LoopbackProxy

/**
 * Puts a deliberately broken variant in front of a PDS: every request is passed on unchanged,
 * except that a 200 exportAccount body is re-framed by `rewrite` (test-sized bodies, buffered).
 */
export function startRewritingProxy(
  upstream: string,
  rewrite: (frames: RawFrame[]) => Uint8Array[],
): Promise<RewritingProxy> {
  return startBufferedProxy(upstream, async (x) =>
    x.url.startsWith(`/xrpc/${NSID.exportAccount}`) && x.status === 200
      ? { ...x, payload: Buffer.concat(rewrite(await rawFrames([x.payload]))) }
      : x,
  )
}

/** Rewrites a raw frame's clear frame number (ciphertext untouched). */
export function renumber(frame: RawFrame, frameNumber: number): Uint8Array {
  const copy = Buffer.from(frame.bytes)
  copy.writeUInt32BE(frameNumber, 0)
  return copy
}
