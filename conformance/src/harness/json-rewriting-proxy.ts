import { type LoopbackProxy, startBufferedProxy } from './buffered-proxy.ts'

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
export type JsonRewritingProxy = LoopbackProxy

/**
 * Puts a deliberately broken variant in front of a PDS (the draft's JSON calls): every request
 * is passed on unchanged; an answer whose body is JSON is given to `rewrite`, which may return
 * another status and body (or `undefined` to keep it). Bodies are buffered (test-sized).
 */
export function startJsonRewritingProxy(
  upstream: string,
  rewrite: (call: JsonCall) => Promise<{ status: number; json: unknown } | undefined>,
): Promise<JsonRewritingProxy> {
  return startBufferedProxy(upstream, async (x) => {
    const nsid = /^\/xrpc\/([^?]+)/.exec(x.url)?.[1]
    if (!nsid || !x.headers['content-type']?.startsWith('application/json')) return x
    const replaced = await rewrite({
      nsid,
      request: parseJson(x.request),
      authorized: x.requestHeaders.authorization !== undefined,
      status: x.status,
      json: parseJson(x.payload),
    })
    if (!replaced) return x
    return {
      status: replaced.status,
      headers: { ...x.headers, 'content-type': 'application/json; charset=utf-8' },
      payload: Buffer.from(JSON.stringify(replaced.json)),
    }
  })
}

function parseJson(bytes: Uint8Array): unknown {
  if (bytes.length === 0) return undefined
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'))
  } catch {
    return undefined
  }
}
