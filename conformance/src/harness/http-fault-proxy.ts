import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'

/** One request as the proxy saw it. */
export interface ProxiedRequest {
  /** The XRPC method (`com.atproto.sync.getBlob`), or the path for anything else. */
  nsid: string
  query: URLSearchParams
  /** Requests of this NSID before this one (0 for the first). */
  n: number
  at: number
  /** Status sent back (the injected one, or the upstream's). */
  status: number
}

/** What to do with one request: pass it on, answer it here, or pass it on with its JSON rewritten. */
export type HttpFault =
  | undefined
  | { status: number; headers?: Record<string, string>; body?: unknown }
  | { rewriteJson: (body: unknown) => unknown }
  /** Passed on with the body's byte at offset `at` (after HTTP framing and decoding) flipped by `mask`. */
  | { corruptAt: number; mask: number }
  /** Passed on, the body held after `holdAfter` bytes until `until` settles (a source gone quiet mid-body). */
  | { holdAfter: number; until: Promise<void> }
  /**
   * Lost on the way, the connection closed when `until` settles: `request`, never passed on
   * (listed in `requests` with status 0 on arrival); `answer`, passed on and answered upstream,
   * but nothing of the answer sent back (listed with the upstream's status once it answered).
   */
  | { lose: 'request' | 'answer'; until: Promise<void> }

export interface HttpFaultProxy {
  url: string
  readonly requests: ProxiedRequest[]
  /** Most requests of one NSID in flight at once. */
  readonly maxInFlight: Map<string, number>
  close(): Promise<void>
}

/**
 * An HTTP reverse proxy on loopback for faults above TCP (statuses, rate limits, rewritten
 * listings): `decide` sees each request and may answer it itself. Bodies passed on are streamed,
 * so a large blob or CAR is never buffered here (only JSON that is rewritten).
 */
export async function startHttpFaultProxy(
  upstream: string,
  decide: (req: Omit<ProxiedRequest, 'at' | 'status'>) => HttpFault,
): Promise<HttpFaultProxy> {
  const requests: ProxiedRequest[] = []
  const counts = new Map<string, number>()
  const inFlight = new Map<string, number>()
  const maxInFlight = new Map<string, number>()
  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://proxy')
      const nsid = url.pathname.startsWith('/xrpc/') ? url.pathname.slice('/xrpc/'.length) : url.pathname
      const n = counts.get(nsid) ?? 0
      counts.set(nsid, n + 1)
      const active = (inFlight.get(nsid) ?? 0) + 1
      inFlight.set(nsid, active)
      maxInFlight.set(nsid, Math.max(active, maxInFlight.get(nsid) ?? 0))
      res.on('close', () => inFlight.set(nsid, (inFlight.get(nsid) ?? 1) - 1))
      const seen = { nsid, query: url.searchParams, n }
      const fault = decide(seen)
      if (fault && 'lose' in fault) {
        const close = () => res.destroy()
        fault.until.then(close, close)
        if (fault.lose === 'request') return requests.push({ ...seen, at: Date.now(), status: 0 })
      }
      if (fault && 'status' in fault) {
        requests.push({ ...seen, at: Date.now(), status: fault.status })
        res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers })
        res.end(JSON.stringify(fault.body ?? { error: 'InjectedFault', message: `injected ${fault.status}` }))
        return
      }
      const answer = await fetch(`${upstream}${req.url}`, {
        method: req.method ?? 'GET',
        headers: forwardHeaders(req),
        ...(req.method !== 'GET' && req.method !== 'HEAD' && { body: await readAll(req) }),
      })
      requests.push({ ...seen, at: Date.now(), status: answer.status })
      if (fault && 'lose' in fault) return
      const out: Record<string, string> = {}
      answer.headers.forEach((value, name) => {
        if (!['content-length', 'transfer-encoding', 'connection', 'content-encoding'].includes(name))
          out[name] = value
      })
      if (fault && 'rewriteJson' in fault && answer.ok) {
        const body = JSON.stringify(fault.rewriteJson(await answer.json()))
        res.writeHead(answer.status, out)
        res.end(body)
        return
      }
      const length = answer.headers.get('content-length')
      res.writeHead(answer.status, { ...out, ...(length && { 'content-length': length }) })
      if (answer.body && fault && 'corruptAt' in fault)
        await pipeline(Readable.fromWeb(answer.body as never), corrupting(fault.corruptAt, fault.mask), res)
      else if (answer.body && fault && 'holdAfter' in fault)
        await pipeline(Readable.fromWeb(answer.body as never), holding(fault.holdAfter, fault.until), res)
      else if (answer.body) await pipeline(Readable.fromWeb(answer.body as never), res)
      else res.end()
    })().catch((err: unknown) => {
      res.destroy(err instanceof Error ? err : new Error(String(err)))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    maxInFlight,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

function forwardHeaders(req: IncomingMessage): Headers {
  const headers = new Headers()
  for (const [name, value] of Object.entries(req.headers)) {
    // Hop-by-hop and framing headers are this connection's: the body is sent on whole.
    if (
      value !== undefined &&
      ![
        'host',
        'connection',
        'keep-alive',
        'content-length',
        'transfer-encoding',
        'accept-encoding',
      ].includes(name)
    )
      headers.set(name, String(value))
  }
  return headers
}

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** Flips the bits `mask` of the byte at offset `at` of the stream. */
function corrupting(at: number, mask: number): Transform {
  let passed = 0
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      const start = passed
      passed += chunk.length
      if (at < start || at >= passed) return done(null, chunk)
      const copy = Buffer.from(chunk)
      copy[at - start] = (copy[at - start] as number) ^ mask
      done(null, copy)
    },
  })
}

/** Passes the first `after` bytes of the stream, then holds the rest until `until` settles. */
function holding(after: number, until: Promise<void>): Transform {
  let passed = 0
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      const start = passed
      passed += chunk.length
      if (passed <= after) return done(null, chunk)
      const cut = Math.max(0, after - start)
      if (cut > 0) this.push(chunk.subarray(0, cut))
      until.then(
        () => done(null, chunk.subarray(cut)),
        () => done(null, chunk.subarray(cut)),
      )
    },
  })
}
