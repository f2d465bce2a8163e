import type { HostileSource } from './hostile-source.ts'

/** What the destination says about one inbound transfer (its getTransferStatus, D14 fields optional). */
export interface DestinationStatus {
  status: string
  /** Ours: what the engine waits for (`awaitingPlcToken` once the data is verified). */
  stage?: string
  /** Ours: the named failure reason (D14). */
  error?: string
  reason?: string
  /** Blobs referenced by the records that reconciliation could not get (D14). */
  missingBlobs?: string[]
}

/** What the destination holds of an account after a transfer attempt (the "nothing imported" evidence). */
export interface AccountProbe {
  active: boolean
  /** A repo was committed for the DID; `undefined` when the probe cannot tell. */
  repo?: boolean
  /** How many of the given blob CIDs it stored; `undefined` when it cannot tell. */
  blobs?: number
  /** How the probe looked (for evidence). */
  via: string
}

/**
 * A receiving PDS under test. Black-box, a destination must let the suite (1) start a pull of
 * a DID from a source URL with a bearer token, (2) read the transfer's status, and (3) show
 * whether the account was imported; see conformance/README.md for the HTTP form of each.
 */
export interface DestinationTarget {
  url: string
  /** Starts a transfer of `did` from `sourceUrl`, authorized by `token`; returns the transferId. */
  start(params: { did: string; sourceUrl: string; token: string }): Promise<string>
  status(transferId: string): Promise<DestinationStatus>
  probe(did: string, blobs: string[]): Promise<AccountProbe>
  /**
   * Enters the user's PLC code for a transfer waiting for it (what the user does at /migrate);
   * the outcome is read from `status`. Without it the completion checks are skipped.
   */
  complete?(transferId: string, plcToken: string): Promise<void>
  /** Our malicious source (started by the suite, reachable by the destination). */
  hostile: HostileSource
  /** Longest wait for a transfer's verdict (default 120 s: a destination may retry a cut stream with backoff). */
  verdictTimeoutMs?: number
}
