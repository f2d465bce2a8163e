import { isTransferAlgorithm, type TransferAlgorithm } from './algorithms.ts'
import { WireError } from './errors.ts'
import { parseTransferPublicJwk, publicJwk, sameKey, type TransferPublicJwk } from './jwk.ts'

/** RFC 8615 path of the discovery document (section 1). */
export const WELL_KNOWN_PATH = '/.well-known/atproto-transfer'
/** Section 1.5: clients cache at most an hour. */
export const WELL_KNOWN_CACHE_CONTROL = 'public, max-age=3600'
/** Longest a peer's document may be cached (section 1.5). */
export const WELL_KNOWN_MAX_AGE_MS = 3600_000

/** The `/.well-known/atproto-transfer` document (section 1.1) plus our `extensions` list. */
export interface TransferWellKnown {
  version: 1
  /** The PDS's service DID. */
  did: string
  /** Suites in preference order. May name suites we do not implement (forward compatibility). */
  algorithms: string[]
  /** JWK Set of HPKE recipient keys. Empty on a PDS that only sends. */
  keys: { keys: TransferPublicJwk[] }
  /** Wire extensions this PDS speaks (spec/extensions.md); absent on a literal 0014 peer. */
  extensions?: string[]
}

/** A key of a peer's document we cannot use, and why. */
export interface DroppedKey {
  kid?: string
  reason: string
}

/** Builds our document; expired keys (as of `now`, Unix seconds) are left out. */
export function buildWellKnown(params: {
  did: string
  algorithms: readonly TransferAlgorithm[]
  keys: readonly TransferPublicJwk[]
  extensions?: readonly string[]
  now?: number
}): TransferWellKnown {
  const { now } = params
  const keys = params.keys
    .filter((k) => now === undefined || k.exp === undefined || k.exp > now)
    .map(publicJwk)
  const doc: TransferWellKnown = {
    version: 1,
    did: params.did,
    algorithms: [...params.algorithms],
    keys: { keys },
  }
  if (params.extensions && params.extensions.length > 0) doc.extensions = [...params.extensions]
  return doc
}

/**
 * Parses a peer's document. Structural faults throw `InvalidWellKnown`; single keys that are
 * expired, malformed or for a suite we lack are dropped (and reported) so that a peer adding a
 * future suite does not break discovery for the ones we share.
 */
export function parseWellKnown(
  value: unknown,
  options: { now?: number } = {},
): { document: TransferWellKnown; droppedKeys: DroppedKey[] } {
  if (!isRecord(value)) throw invalid('the document must be a JSON object')
  if (value.version !== 1) throw invalid(`version must be 1, got ${JSON.stringify(value.version)}`)
  if (typeof value.did !== 'string' || !/^did:[a-z]+:[a-zA-Z0-9._:%-]+$/.test(value.did)) {
    throw invalid('did must be a DID')
  }
  const { algorithms } = value
  if (
    !Array.isArray(algorithms) ||
    algorithms.length === 0 ||
    !algorithms.every((a) => typeof a === 'string')
  ) {
    throw invalid('algorithms must be a non-empty array of strings')
  }
  if (!isRecord(value.keys) || !Array.isArray(value.keys.keys))
    throw invalid('keys must be a JWK Set {"keys": [...]}')
  const keys: TransferPublicJwk[] = []
  const droppedKeys: DroppedKey[] = []
  const kids = new Set<string>()
  for (const raw of value.keys.keys as unknown[]) {
    const kid = isRecord(raw) && typeof raw.kid === 'string' ? raw.kid : undefined
    if (kid !== undefined) {
      if (kids.has(kid)) throw invalid(`kid ${kid} appears twice`)
      kids.add(kid)
    }
    try {
      keys.push(parseTransferPublicJwk(raw, { now: options.now }))
    } catch (err) {
      if (!(err instanceof WireError)) throw err
      droppedKeys.push(kid === undefined ? { reason: err.message } : { kid, reason: err.message })
    }
  }
  const document: TransferWellKnown = {
    version: 1,
    did: value.did,
    algorithms: algorithms as string[],
    keys: { keys },
  }
  if (value.extensions !== undefined) {
    const ext = value.extensions
    if (!Array.isArray(ext) || !ext.every((e) => typeof e === 'string')) {
      throw invalid('extensions must be an array of strings')
    }
    document.extensions = ext as string[]
  }
  return { document, droppedKeys }
}

/** The document's copy of `key` when kid, x, alg and exp all match (decision D7). */
export function findPublishedKey(
  doc: TransferWellKnown,
  key: TransferPublicJwk,
): TransferPublicJwk | undefined {
  return doc.keys.keys.find((k) => sameKey(k, key))
}

/**
 * The suite to use: the first of `preferred` (the receiver's order) that the sender also
 * offers and we implement.
 */
export function selectAlgorithm(
  preferred: readonly string[],
  offered: readonly string[],
): TransferAlgorithm | undefined {
  return preferred.find((a): a is TransferAlgorithm => isTransferAlgorithm(a) && offered.includes(a))
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function invalid(message: string): WireError {
  return new WireError('InvalidWellKnown', message)
}
