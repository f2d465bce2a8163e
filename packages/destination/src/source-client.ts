/**
 * How the engine talks to a source PDS as the user's authorized client. With OAuth this is the
 * session's DPoP-bound `fetchHandler`; tests may use a bearer token (`bearerSourceClient`).
 */
export interface SourceClient {
  /** Base URL of the source PDS (its DID document's `atproto_pds` endpoint). */
  readonly url: string
  /** Fetches `path` (starting with `/xrpc/`) on the source with the user's authorization. */
  fetch(path: string, init?: RequestInit): Promise<Response>
}

/** A `SourceClient` sending `Authorization: Bearer <token>`. */
export function bearerSourceClient(url: string, token: string): SourceClient {
  const base = url.replace(/\/$/, '')
  return {
    url: base,
    fetch: (path, init = {}) => {
      const headers = new Headers(init.headers)
      headers.set('authorization', `Bearer ${token}`)
      return fetch(`${base}${path}`, { ...init, headers })
    },
  }
}

/** A non-2xx XRPC answer from the source, with its error name. */
export class SourceError extends Error {
  override readonly name = 'SourceError'
  constructor(
    readonly status: number,
    readonly error: string,
    message: string,
  ) {
    super(`${error} (${status}): ${message}`)
  }

  static async from(res: Response, what: string): Promise<SourceError> {
    let body: { error?: unknown; message?: unknown } = {}
    try {
      body = (await res.json()) as typeof body
    } catch {
      // Not an XRPC error body; the status alone is the evidence.
    }
    const error = typeof body.error === 'string' ? body.error : `HTTP${res.status}`
    const message = typeof body.message === 'string' ? body.message : `${what} failed`
    return new SourceError(res.status, error, `${what}: ${message}`)
  }
}
