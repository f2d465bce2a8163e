import type { SourceClient } from '@pds-transfer/destination'
import { CheckFailed } from './check.ts'

/** An XRPC answer read whole: status, lower-cased headers, JSON body if any, raw text otherwise. */
export interface XrpcAnswer {
  status: number
  headers: Headers
  json: Record<string, unknown> | undefined
  text: string
}

/** POSTs JSON (or GETs with `query`) through an authorized client and reads the answer whole. */
export async function xrpc(
  client: SourceClient,
  nsid: string,
  options: { body?: unknown; rawBody?: string; query?: Record<string, string>; timeoutMs?: number },
): Promise<XrpcAnswer> {
  const query = options.query ? `?${new URLSearchParams(options.query)}` : ''
  const post = options.body !== undefined || options.rawBody !== undefined
  const res = await client.fetch(`/xrpc/${nsid}${query}`, {
    method: post ? 'POST' : 'GET',
    ...(post && {
      headers: { 'content-type': 'application/json' },
      body: options.rawBody ?? JSON.stringify(options.body),
    }),
    signal: AbortSignal.timeout(options.timeoutMs ?? 60_000),
  })
  const text = await res.text()
  let json: Record<string, unknown> | undefined
  try {
    json = JSON.parse(text) as Record<string, unknown>
  } catch {
    json = undefined
  }
  return { status: res.status, headers: res.headers, json, text }
}

/** `HTTP 403 TransferNotAuthorized: message` for evidence. */
export function describe(answer: XrpcAnswer): string {
  const name = typeof answer.json?.error === 'string' ? ` ${answer.json.error}` : ''
  const message =
    typeof answer.json?.message === 'string'
      ? `: ${answer.json.message}`
      : answer.json
        ? ''
        : `: ${answer.text.slice(0, 200)}`
  return `HTTP ${answer.status}${name}${message}`
}

/** Passes (returning the evidence) only for an XRPC error of this status and name. */
export function expectXrpcError(answer: XrpcAnswer, status: number, error: string): string {
  if (answer.status !== status || answer.json?.error !== error) {
    throw new CheckFailed(`expected ${status} ${error}, got ${describe(answer)}`)
  }
  return describe(answer)
}

/** A client that sends no credentials (unauthenticated requests). */
export function anonymousClient(url: string): SourceClient {
  const base = url.replace(/\/$/, '')
  return { url: base, fetch: (path, init) => fetch(`${base}${path}`, init) }
}
