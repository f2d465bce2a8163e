import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { NSID } from '@pds-transfer/core'
import { type RawFrame, rawFrames } from './crafted-source.ts'

/** A reverse proxy on loopback that can rewrite the frames of exportAccount answers. */
export interface RewritingProxy {
  url: string
  close(): Promise<void>
}

/**
 * Puts a deliberately broken variant in front of a PDS: every request is passed on unchanged,
 * except that a 200 exportAccount body is re-framed by `rewrite` (test-sized bodies, buffered).
 */
export async function startRewritingProxy(
  upstream: string,
  rewrite: (frames: RawFrame[]) => Uint8Array[],
): Promise<RewritingProxy> {
  const server = createServer((req, res) => {
    void (async () => {
      const body = await readAll(req)
      const headers = new Headers()
      for (const [name, value] of Object.entries(req.headers)) {
        if (value !== undefined && !['host', 'connection', 'content-length'].includes(name))
          headers.set(name, String(value))
      }
      const answer = await fetch(`${upstream}${req.url}`, {
        method: req.method ?? 'GET',
        headers,
        ...(body.length > 0 && { body }),
      })
      const out: Record<string, string> = {}
      answer.headers.forEach((value, name) => {
        if (!['content-length', 'transfer-encoding', 'connection', 'content-encoding'].includes(name))
          out[name] = value
      })
      let payload = new Uint8Array(await answer.arrayBuffer())
      if (req.url?.startsWith(`/xrpc/${NSID.exportAccount}`) && answer.status === 200) {
        payload = Buffer.concat(rewrite(await rawFrames([payload])))
      }
      res.writeHead(answer.status, out)
      res.end(payload)
    })().catch((err: unknown) => {
      res.destroy(err instanceof Error ? err : new Error(String(err)))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of req) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}

/** Rewrites a raw frame's clear frame number (ciphertext untouched). */
export function renumber(frame: RawFrame, frameNumber: number): Uint8Array {
  const copy = Buffer.from(frame.bytes)
  copy.writeUInt32BE(frameNumber, 0)
  return copy
}
