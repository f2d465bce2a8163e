import { LIMITS } from '@pds-transfer/core'

/** Limits of the proposal's denial-of-service section (defaults are its recommendations). */
export interface EngineLimits {
  /** Concurrent inbound transfers on this worker (5). */
  maxConcurrent: number
  /** Concurrent inbound transfers from one source PDS (2). */
  maxPerSource: number
  /** Bytes all running transfers may have received in total (50 GB). */
  maxInFlightBytes: number
  /** A stream that delivers nothing for this long is abandoned as `NoProgress` (5 minutes). */
  stallTimeoutMs: number
  /** Largest single blob accepted (100 MB, the reference PDS's default). */
  maxBlobSize: number
  /**
   * getBlob calls in flight at once, per transfer, when blobs come over the sync endpoints (4,
   * what other server-side movers use; a source's rate limit is answered by its 429's wait).
   */
  blobConcurrency: number
  /**
   * Attempts per network step when the connection breaks (an export session, a
   * completeTransfer call, a PLC submission), and the first backoff (doubling).
   */
  retry: { attempts: number; baseDelayMs: number; maxDelayMs?: number }
}

export const DEFAULT_LIMITS: EngineLimits = {
  maxConcurrent: 5,
  maxPerSource: 2,
  maxInFlightBytes: 50e9,
  stallTimeoutMs: 5 * 60_000,
  maxBlobSize: LIMITS.defaultMaxBlobSize,
  blobConcurrency: 4,
  // About three minutes in all: a source restarting for a deploy must not cost the user the move.
  retry: { attempts: 8, baseDelayMs: 2000, maxDelayMs: 60_000 },
}

/** The wait before attempt `attempt + 1`: doubling from `baseDelayMs`, capped at `maxDelayMs`. */
export function backoff(retry: EngineLimits['retry'], attempt: number): number {
  return Math.min(retry.baseDelayMs * 2 ** (attempt - 1), retry.maxDelayMs ?? Number.POSITIVE_INFINITY)
}
