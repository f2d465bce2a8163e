import type { TransferPrivateJwk } from '@pds-transfer/core'
import type { SourceClient } from '@pds-transfer/destination'
import type { ExportAnalysis } from './analyze-export.ts'
import type { ExportCapture } from './export-capture.ts'

/**
 * A sending PDS under test and what the suite needs to exercise it: an authorized client for a
 * test account, and a recipient key that the client's origin publishes (key binding, D7).
 */
export interface SourceTarget {
  url: string
  /** The test account (it is exported, never moved unless `complete` is given). */
  did: string
  /** Sends requests with the account's transfer scopes (bearer token, or a DPoP session's fetch). */
  client: SourceClient
  /** Private HPKE key the export is encrypted to; its public half must be published by the client's origin. */
  recipientKey: TransferPrivateJwk
  /** The DID's `#atproto` key (did:key); resolved from `plcUrl` when absent. */
  signingKey?: string
  /** PLC directory for resolving the DID and checking the returned operation (default https://plc.directory). */
  plcUrl?: string
  /** Extensions to ask for in exportAccount (default: those the source's well-known lists). */
  extensions?: string[]
  /**
   * completeTransfer runs only with this: the emailed PLC token and the move to ask for. The
   * operation is checked, and submitted to PLC only with `submit` (the account then moves).
   */
  complete?: {
    plcToken: () => Promise<string>
    newPdsEndpoint: string
    newSigningKey: string
    /** The destination's rotation key, appended after the DID's current keys (D8). */
    newRotationKey: string
    submit?: boolean
  }
  /**
   * Tells whether the source has sent a PLC token email for the account (in-process targets
   * only); asked before the export, when it answers and after its body, to see when (E8).
   */
  plcTokenSent?: () => Promise<boolean>
  /** Whether the account is still active at the source (in-process; black-box uses sync.getLatestCommit). */
  accountActive?: () => Promise<boolean>
  /**
   * Another account this source hosts, which the token does not cover: exportAccount for it
   * must be 403 (D22). Without it a DID that no PDS hosts is asked for.
   */
  otherDid?: string
  /** A second authorized client for the same account, from another destination (TransferAlreadyActive). */
  otherClient?: { client: SourceClient; recipientKey: TransferPrivateJwk }
  /** Per-request timeout in ms (default 120 000). */
  timeoutMs?: number
  /**
   * Filled by the suite: the one recorded export that the stream checks examine, and whether a
   * PLC token had been sent before it was asked for and when it answered (with `plcTokenSent`).
   */
  recorded?: {
    capture: ExportCapture
    analysis: ExportAnalysis
    plcTokenSent?: { before: boolean; atResponse: boolean }
  }
}
