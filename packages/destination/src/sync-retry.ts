/**
 * Retries of the plain sync calls (getRepo, listBlobs, getBlob, getPreferences). Invariant: only
 * a `TransientSourceError` is retried (a broken connection, a stall, a 5xx, a 429, bytes that did
 * not hash to their CID); a wait the source asked for (`Retry-After`, `RateLimit-Reset`) is never
 * cut short, and anything else ends the call at once.
 */
import { backoff, type EngineLimits } from './engine-limits.ts'
import { ImportFailure } from './import-failure.ts'
import type { FailureReason } from './inbound-transfer.ts'
import { SourceError } from './source-client.ts'

/** A failure of one call that another attempt may not have. */
export class TransientSourceError extends Error {
  override readonly name = 'TransientSourceError'
  constructor(
    message: string,
    /** What broke: the connection, the source's answer, or the bytes it sent. */
    readonly kind: 'cut' | 'stall' | 'status' | 'mismatch',
    /** The wait the source asked for, in milliseconds. */
    readonly retryAfterMs?: number,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}

/** Longest wait a source may ask of us for one call: longer, and the call fails instead. */
const MAX_REQUESTED_WAIT_MS = 15 * 60_000

/**
 * The wait a 429 (or 503) asks for: `Retry-After` (seconds or an HTTP date, RFC 9110), else
 * `RateLimit-Reset`. The reference PDS sends the latter as epoch seconds; the IETF draft as
 * seconds from now: a value too large to be a delta is read as a time.
 */
export function requestedDelayMs(headers: Headers, now: number = Date.now()): number | undefined {
  const retryAfter = headers.get('retry-after')?.trim()
  if (retryAfter) {
    if (/^\d+$/.test(retryAfter)) return Number(retryAfter) * 1000
    const at = Date.parse(retryAfter)
    if (Number.isFinite(at)) return Math.max(0, at - now)
  }
  const reset = headers.get('ratelimit-reset')?.trim()
  if (reset && /^\d+$/.test(reset)) {
    const value = Number(reset)
    return value > 1e9 ? Math.max(0, value * 1000 - now) : value * 1000
  }
  return undefined
}

/**
 * Throws for an answer that is not a success: 429 and 5xx as `TransientSourceError` (with the
 * wait asked for), anything else as `SourceError`.
 */
export async function assertOk(res: Response, what: string): Promise<Response> {
  if (res.ok) return res
  if (res.status === 429 || res.status >= 500) {
    await res.body?.cancel().catch(() => {})
    throw new TransientSourceError(`${what}: HTTP ${res.status}`, 'status', requestedDelayMs(res.headers))
  }
  throw await SourceError.from(res, what)
}

/**
 * Runs `attempt` until it succeeds, retrying `TransientSourceError`s up to `retry.attempts` in
 * all. Between attempts it waits what the source asked for, or else the doubling backoff.
 * `onRetry` is told of each wait before it starts (to record it).
 */
export async function withRetries<T>(
  retry: EngineLimits['retry'],
  attempt: () => Promise<T>,
  onRetry?: (info: { attempt: number; delayMs: number; error: TransientSourceError }) => Promise<void>,
): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt()
    } catch (err) {
      if (!(err instanceof TransientSourceError) || n >= retry.attempts) throw err
      const asked = err.retryAfterMs
      if (asked !== undefined && asked > MAX_REQUESTED_WAIT_MS) throw tooLongAWait(err, asked)
      const delayMs = asked ?? backoff(retry, n)
      await onRetry?.({ attempt: n, delayMs, error: err })
      await new Promise((resolve) => setTimeout(resolve, delayMs))
    }
  }
}

/**
 * The failure of a call whose source asked for a wait longer than a pull waits: it says how long
 * and until when, which is the user's way on (resume after then).
 */
function tooLongAWait(err: TransientSourceError, askedMs: number): TransientSourceError {
  const until = new Date(Date.now() + askedMs).toISOString()
  return new TransientSourceError(
    `${err.message}: the source asks to wait ${Math.ceil(askedMs / 1000)} s (until ${until}), longer than the ${MAX_REQUESTED_WAIT_MS / 60_000} min a pull waits; resume after then`,
    err.kind,
    askedMs,
    { cause: err },
  )
}

/**
 * Fetches with the stall watchdog: the request is aborted, as a `TransientSourceError`, when the
 * source sends nothing for `stallMs`; a connection that fails is one too. The body is handed to
 * `consume` through a guard that keeps the stream's own error: a parser that wraps a cut (a CAR
 * reader's "unexpected end") must not turn it into a verdict on the data.
 */
export async function fetchStreaming<T>(
  fetchOnce: (signal: AbortSignal) => Promise<Response>,
  what: string,
  stallMs: number,
  consume: (res: Response, body: AsyncIterable<Uint8Array>) => Promise<T>,
): Promise<T> {
  const abort = new AbortController()
  let timer: NodeJS.Timeout | undefined
  const touch = () => {
    clearTimeout(timer)
    timer = setTimeout(
      () => abort.abort(new TransientSourceError(`${what}: the source sent nothing for too long`, 'stall')),
      stallMs,
    )
  }
  let streamError: unknown
  try {
    touch()
    let res: Response
    try {
      res = await fetchOnce(abort.signal)
    } catch (err) {
      throw (
        abort.signal.reason ??
        new TransientSourceError(`${what}: ${message(err)}`, 'cut', undefined, { cause: err })
      )
    }
    await assertOk(res, what)
    const body: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]: () => {
        const iterator = (res.body ?? emptyBody())[Symbol.asyncIterator]()
        return {
          next: async () => {
            try {
              const next = await iterator.next()
              touch()
              return next
            } catch (err) {
              streamError ??=
                abort.signal.reason ??
                new TransientSourceError(
                  `${what}: the connection broke mid-body (${message(err)})`,
                  'cut',
                  undefined,
                  { cause: err },
                )
              throw streamError
            }
          },
        }
      },
    }
    try {
      return await consume(res, body)
    } catch (err) {
      throw streamError ?? err
    }
  } finally {
    clearTimeout(timer)
    if (!abort.signal.aborted) abort.abort()
  }
}

/**
 * A JSON answer read through `fetchStreaming`'s guarded body (so a cut stays a cut), at most
 * `maxBytes`. What is too long, not UTF-8 or not JSON is `ImportFailure(reason)`.
 */
export async function readJson(
  body: AsyncIterable<Uint8Array>,
  limits: { maxBytes: number; what: string; reason: FailureReason },
): Promise<unknown> {
  const chunks: Uint8Array[] = []
  let size = 0
  for await (const chunk of body) {
    size += chunk.length
    if (size > limits.maxBytes)
      throw new ImportFailure(limits.reason, `${limits.what}: answer over ${limits.maxBytes} bytes`)
    chunks.push(chunk)
  }
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks)))
  } catch (err) {
    throw new ImportFailure(limits.reason, `${limits.what}: not UTF-8 JSON (${message(err)})`, { cause: err })
  }
}

async function* emptyBody(): AsyncGenerator<Uint8Array> {}

function message(err: unknown): string {
  const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : ''
  return err instanceof Error ? `${err.message}${cause}` : String(err)
}

/** A transient failure that outlasted its retries, as the named failure it ends the pull with. */
export function exhaustedFailure(err: TransientSourceError): ImportFailure {
  switch (err.kind) {
    case 'mismatch':
      return new ImportFailure('BlobInvalid', err.message, { cause: err })
    case 'stall':
      return new ImportFailure('NoProgress', err.message, { cause: err })
    case 'cut':
      return new ImportFailure('StreamCut', err.message, { cause: err })
    case 'status':
      return new ImportFailure('SourceUnreachable', err.message, { cause: err })
  }
}
