import { createServer, type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'

/** One request passed through the proxy and the upstream's answer, both buffered (test-sized). */
export interface BufferedExchange {
  /** The request's path and query. */
  url: string
  requestHeaders: IncomingHttpHeaders
  request: Buffer
  status: number
  /** The answer's headers, without those that describe the bytes on the wire. */
  headers: Record<string, string>
  payload: Uint8Array
}

/** A reverse proxy on loopback. */
export interface LoopbackProxy {
  url: string
  close(): Promise<void>
}

/**
 * A reverse proxy in front of `upstream` that passes every request on unchanged and answers
 * with what `answer` makes of the upstream's reply (the hostile variants of a PDS the suite's
 * tests need are each one such function).
 */
export async function startBufferedProxy(
  upstream: string,
  answer: (exchange: BufferedExchange) => Promise<Pick<BufferedExchange, 'status' | 'headers' | 'payload'>>,
): Promise<LoopbackProxy> {
  const server = createServer((req, res) => {
    void (async () => {
      const request = await readAll(req)
      const headers = new Headers()
      for (const [name, value] of Object.entries(req.headers)) {
        if (value !== undefined && !['host', 'connection', 'content-length'].includes(name))
          headers.set(name, String(value))
      }
      const reply = await fetch(`${upstream}${req.url}`, {
        method: req.method ?? 'GET',
        headers,
        ...(request.length > 0 && { body: request }),
      })
      const out: Record<string, string> = {}
      reply.headers.forEach((value, name) => {
        if (!['content-length', 'transfer-encoding', 'connection', 'content-encoding'].includes(name))
          out[name] = value
      })
      const sent = await answer({
        url: req.url ?? '/',
        requestHeaders: req.headers,
        request,
        status: reply.status,
        headers: out,
        payload: new Uint8Array(await reply.arrayBuffer()),
      })
      res.writeHead(sent.status, sent.headers)
      res.end(sent.payload)
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
