import { createHash } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { NSID, publicJwk, type TransferPrivateJwk } from '@pds-transfer/core'
import type { SourceClient } from '@pds-transfer/destination'

/**
 * One raw exportAccount exchange, everything needed to decode it offline: the request as sent,
 * the response status, headers and body bytes exactly as received, and the recipient's private
 * key. The on-disk form is specified in spec/capture-format.md.
 */
export interface ExportCapture {
  format: typeof CAPTURE_FORMAT
  version: 1
  capturedAt: string
  sourceUrl: string
  did: string
  transferId: string
  /** The exportAccount input as sent (its `encryptionKey` is the public half of `recipientKey`). */
  request: Record<string, unknown>
  response: {
    status: number
    /** Lower-cased header names; repeated headers joined with ", ". */
    headers: Record<string, string>
  }
  /** False when reading the body failed (reset, timeout); `body` then holds what arrived. */
  bodyComplete: boolean
  bodyError?: string
  /** The DID's `#atproto` signing key (did:key) when the capture was made, for offline CAR checks. */
  signingKey?: string
  recipientKey: TransferPrivateJwk
  body: Uint8Array
}

export const CAPTURE_FORMAT = 'atproto-transfer-capture'
const META_FILE = 'capture.json'
const BODY_FILE = 'body.bin'
const KEY_FILE = 'recipient-key.jwk'

/** Calls exportAccount through `client` and records the whole exchange (test-sized accounts: kept in memory). */
export async function recordExport(params: {
  client: SourceClient
  did: string
  transferId: string
  recipientKey: TransferPrivateJwk
  /** Extra input fields (`extensions`, `resume`). */
  extra?: Record<string, unknown>
  signingKey?: string
  timeoutMs?: number
  /** Called once the response headers are in, before any of the body is read. */
  onResponse?: () => Promise<void>
}): Promise<ExportCapture> {
  const request = {
    did: params.did,
    transferId: params.transferId,
    algorithm: params.recipientKey.alg,
    encryptionKey: publicJwk(params.recipientKey),
    ...params.extra,
  }
  const res = await params.client.fetch(`/xrpc/${NSID.exportAccount}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(request),
    signal: AbortSignal.timeout(params.timeoutMs ?? 300_000),
  })
  await params.onResponse?.()
  const headers: Record<string, string> = {}
  res.headers.forEach((value, name) => {
    headers[name.toLowerCase()] = value
  })
  const chunks: Uint8Array[] = []
  let bodyError: string | undefined
  try {
    if (res.body) for await (const chunk of res.body) chunks.push(chunk)
  } catch (err) {
    bodyError = err instanceof Error ? `${err.name}: ${err.message}` : String(err)
  }
  return {
    format: CAPTURE_FORMAT,
    version: 1,
    capturedAt: new Date().toISOString(),
    sourceUrl: params.client.url,
    did: params.did,
    transferId: params.transferId,
    request,
    response: { status: res.status, headers },
    bodyComplete: bodyError === undefined,
    ...(bodyError !== undefined && { bodyError }),
    ...(params.signingKey && { signingKey: params.signingKey }),
    recipientKey: params.recipientKey,
    body: Buffer.concat(chunks),
  }
}

/** Writes `capture.json`, `body.bin` and `recipient-key.jwk` (mode 0600: it decrypts the account) to `dir`. */
export async function writeCapture(dir: string, capture: ExportCapture): Promise<void> {
  await mkdir(dir, { recursive: true })
  const { body, recipientKey, ...meta } = capture
  await writeFile(join(dir, BODY_FILE), body)
  await writeFile(join(dir, KEY_FILE), `${JSON.stringify(recipientKey, null, 2)}\n`, { mode: 0o600 })
  const file = {
    ...meta,
    body: { file: BODY_FILE, length: body.length, sha256: createHash('sha256').update(body).digest('hex') },
    recipientKeyFile: KEY_FILE,
  }
  await writeFile(join(dir, META_FILE), `${JSON.stringify(file, null, 2)}\n`)
}

/** Reads a capture folder; checks the format, version and the body's length and SHA-256. */
export async function readCapture(dir: string): Promise<ExportCapture> {
  let meta: Record<string, unknown>
  try {
    meta = JSON.parse(await readFile(join(dir, META_FILE), 'utf8')) as Record<string, unknown>
  } catch (err) {
    throw new Error(`${dir} is not a capture folder: cannot read ${META_FILE} (${(err as Error).message})`)
  }
  if (meta.format !== CAPTURE_FORMAT || meta.version !== 1) {
    throw new Error(`${join(dir, META_FILE)}: format must be "${CAPTURE_FORMAT}" version 1`)
  }
  for (const field of ['did', 'transferId', 'sourceUrl'] as const) {
    if (typeof meta[field] !== 'string') throw new Error(`${join(dir, META_FILE)}: ${field} must be a string`)
  }
  const bodyMeta = meta.body as { file?: unknown; length?: unknown; sha256?: unknown } | undefined
  const bodyFile = typeof bodyMeta?.file === 'string' ? bodyMeta.file : BODY_FILE
  const body = new Uint8Array(await readFile(join(dir, bodyFile)))
  if (typeof bodyMeta?.length === 'number' && bodyMeta.length !== body.length) {
    throw new Error(`${bodyFile}: ${body.length} bytes, capture.json says ${bodyMeta.length}`)
  }
  const sha = createHash('sha256').update(body).digest('hex')
  if (typeof bodyMeta?.sha256 === 'string' && bodyMeta.sha256 !== sha) {
    throw new Error(`${bodyFile}: SHA-256 ${sha} differs from capture.json's ${bodyMeta.sha256}`)
  }
  const keyFile = typeof meta.recipientKeyFile === 'string' ? meta.recipientKeyFile : KEY_FILE
  const recipientKey = JSON.parse(await readFile(join(dir, keyFile), 'utf8')) as TransferPrivateJwk
  const { body: _b, recipientKeyFile: _k, ...rest } = meta
  return { ...(rest as Omit<ExportCapture, 'body' | 'recipientKey'>), recipientKey, body }
}
