import {
  findPublishedKey,
  parseWellKnown,
  TransferError,
  type TransferPublicJwk,
  type TransferWellKnown,
  WELL_KNOWN_PATH,
} from '@pds-transfer/core'

export interface DestinationKeysOptions {
  /** Per-request timeout of the well-known fetch (default 5 s). */
  timeoutMs?: number
  /** Longest time a document is trusted (the proposal: at most 1 hour). */
  maxAgeMs?: number
  fetch?: typeof globalThis.fetch
  now?: () => number
  /**
   * Development only: accept atproto loopback clients (`http://localhost?redirect_uri=...`),
   * locating the destination at the origin of their redirect URI. A loopback client has no
   * origin of its own, and its redirect URI can only point at the user's own machine, so this
   * proves nothing about a real destination (decision D17). Default false.
   */
  allowLoopbackClients?: boolean
}

/**
 * Decision 4: the key an exportAccount request encrypts to must be one the
 * destination publishes at its `/.well-known/atproto-transfer`, the
 * destination being identified by the origin of the OAuth client. Otherwise
 * whoever holds the token could have the account encrypted to their own key.
 */
export class DestinationKeys {
  private readonly cache = new Map<string, { doc: TransferWellKnown; until: number }>()
  private readonly timeoutMs: number
  private readonly maxAgeMs: number
  private readonly fetch: typeof globalThis.fetch
  private readonly now: () => number
  private readonly allowLoopbackClients: boolean

  constructor(options: DestinationKeysOptions = {}) {
    this.allowLoopbackClients = options.allowLoopbackClients ?? false
    this.timeoutMs = options.timeoutMs ?? 5000
    this.maxAgeMs = options.maxAgeMs ?? 3600_000
    this.fetch = options.fetch ?? globalThis.fetch
    this.now = options.now ?? Date.now
  }

  /** Returns the destination's document if `key` is published there; throws TransferNotAuthorized otherwise. */
  async assertPublished(clientId: string, key: TransferPublicJwk): Promise<TransferWellKnown> {
    const origin = clientOrigin(clientId, { allowLoopback: this.allowLoopbackClients })
    const cached = this.cache.get(origin)
    if (cached && cached.until > this.now() && findPublishedKey(cached.doc, key)) return cached.doc
    // Not cached, stale, or the key may be newer than our copy (rotation): fetch again.
    const doc = await this.load(origin)
    if (!findPublishedKey(doc, key)) {
      throw new TransferError(
        'TransferNotAuthorized',
        `encryptionKey ${key.kid} is not published at ${origin}${WELL_KNOWN_PATH} (kid, x, alg and exp must match)`,
      )
    }
    return doc
  }

  private async load(origin: string): Promise<TransferWellKnown> {
    const url = `${origin}${WELL_KNOWN_PATH}`
    let body: unknown
    let maxAge = this.maxAgeMs
    try {
      const res = await this.fetch(url, { signal: AbortSignal.timeout(this.timeoutMs), redirect: 'error' })
      if (!res.ok) throw new Error(`HTTP ${res.status}`)
      body = await res.json()
      const declared = /max-age=(\d+)/.exec(res.headers.get('cache-control') ?? '')?.[1]
      if (declared !== undefined) maxAge = Math.min(maxAge, Number(declared) * 1000)
    } catch (err) {
      throw new TransferError(
        'TransferNotAuthorized',
        `cannot fetch the destination's ${url}: ${String(err)}`,
        {
          cause: err,
        },
      )
    }
    let doc: TransferWellKnown
    try {
      doc = parseWellKnown(body, { now: Math.floor(this.now() / 1000) }).document
    } catch (err) {
      throw new TransferError('TransferNotAuthorized', `invalid document at ${url}: ${String(err)}`, {
        cause: err,
      })
    }
    this.cache.set(origin, { doc, until: this.now() + maxAge })
    return doc
  }
}

/**
 * The destination's origin, from its OAuth client_id (a URL on the destination, section 3.1);
 * for an allowed loopback client, the origin of its one redirect URI.
 */
export function clientOrigin(clientId: string, options: { allowLoopback?: boolean } = {}): string {
  let url: URL
  try {
    url = new URL(clientId)
  } catch {
    throw new TransferError('TransferNotAuthorized', `OAuth client_id ${clientId} is not a URL`)
  }
  if (
    url.protocol === 'http:' &&
    url.hostname === 'localhost' &&
    (url.pathname === '/' || url.pathname === '')
  ) {
    const redirects = url.searchParams.getAll('redirect_uri')
    if (!options.allowLoopback || redirects.length !== 1) {
      throw new TransferError(
        'TransferNotAuthorized',
        'a loopback OAuth client has no origin to publish transfer keys at (development sources may allow one with a single redirect_uri)',
      )
    }
    return new URL(redirects[0] as string).origin
  }
  return url.origin
}
