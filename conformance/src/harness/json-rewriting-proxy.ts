import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'

/** One XRPC call seen by the proxy, with the upstream's JSON answer. */
export interface JsonCall {
  /** The method, e.g. `com.atproto.transfer.exportAccount`. */
  nsid: string
  /** The request body parsed as JSON (`undefined` for none or not JSON). */
  request: unknown
  /** Whether the request carried an Authorization header. */
  authorized: boolean
  status: number
  json: unknown
}

/** A reverse proxy on loopback that can replace the JSON answers of XRPC calls. */
export interface JsonRewritingProxy {
  url: string
  close(): Promise<void>
}

/**
 * Puts a deliberately broken variant in front of a PDS (the draft's JSON calls): every request
 * is passed on unchanged; an answer whose body is JSON is given to `rewrite`, which may return
 * another status and body (or `undefined` to keep it). Bodies are buffered (test-sized).
 */
export async function startJsonRewritingProxy(
  upstream: string,
  rewrite: (call: JsonCall) => Promise<{ status: number; json: unknown } | undefined>,
): Promise<JsonRewritingProxy> {
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
      let status = answer.status
      let payload: Uint8Array = new Uint8Array(await answer.arrayBuffer())
      const nsid = /^\/xrpc\/([^?]+)/.exec(req.url ?? '')?.[1]
      if (nsid && answer.headers.get('content-type')?.startsWith('application/json')) {
        const replaced = await rewrite({
          nsid,
          request: parseJson(body),
          authorized: req.headers.authorization !== undefined,
          status,
          json: parseJson(payload),
        })
        if (replaced) {
          status = replaced.status
          payload = Buffer.from(JSON.stringify(replaced.json))
          out['content-type'] = 'application/json; charset=utf-8'
        }
      }
      res.writeHead(status, out)
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

function parseJson(bytes: Uint8Array): unknown {
  if (bytes.length === 0) return undefined
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'))
  } catch {
    return undefined
  }
}

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of req) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
}
