import { readFileSync } from 'node:fs'
import { type LexiconDoc, Lexicons, parseLexiconDoc } from '@atproto/lexicon'
import { TransferError } from './errors.ts'
import { LEXICON_DIR } from './lexicon-dir.ts'

/**
 * The `com.atproto.transfer.*` lexicons of proposal 0014 (sections 2.1-2.3) and validators for the
 * bodies that cross the wire. The JSON documents under `/lexicons` are the source of truth; this
 * module only loads them, so a schema change cannot drift from the validators.
 */

/** NSIDs of the three transfer endpoints of 0014, and of our extension endpoint. */
export const NSID = {
  exportAccount: 'com.atproto.transfer.exportAccount',
  completeTransfer: 'com.atproto.transfer.completeTransfer',
  getTransferStatus: 'com.atproto.transfer.getTransferStatus',
  /** Extension `plc-token-refresh` (spec/extensions.md). */
  requestPlcToken: 'com.atproto.transfer.requestPlcToken',
} as const

const LEXICON_FILES = [
  'defs',
  'exportAccount',
  'completeTransfer',
  'getTransferStatus',
  'requestPlcToken',
] as const

function loadLexicon(name: string): LexiconDoc {
  const url = new URL(`com/atproto/transfer/${name}.json`, LEXICON_DIR)
  // parseLexiconDoc checks the document itself, so a malformed schema fails at load, not at first request.
  return parseLexiconDoc(JSON.parse(readFileSync(url, 'utf8')))
}

/** The parsed lexicon documents, as written (refs not yet resolved to `lex:` URIs). */
export const TRANSFER_LEXICONS: readonly LexiconDoc[] = LEXICON_FILES.map(loadLexicon)

/** A `Lexicons` collection holding the transfer lexicons. */
// Lexicons.add rewrites refs in place, so it gets a copy and TRANSFER_LEXICONS stays as on disk.
export const transferLexicons = new Lexicons(structuredClone(TRANSFER_LEXICONS) as LexiconDoc[])

/** The destination's HPKE public key as sent in `exportAccount` (`com.atproto.transfer.defs#transferKey`). */
export type TransferKeyInput = Record<string, unknown> & {
  kty: string
  crv: string
  x: string
  kid: string
  alg: string
  use: string
  exp?: number
}

/** Body of `com.atproto.transfer.exportAccount` (section 2.1). */
export interface ExportAccountInput {
  did: string
  /** UUIDv7 chosen by the destination. */
  transferId: string
  algorithm: string
  encryptionKey: TransferKeyInput
  /** Negotiated wire extensions; absent for a literal 0014 transfer. */
  extensions?: string[]
  /** Extension `resume`: continue from what the destination already verified. */
  resume?: ResumePoint
}

/** Where a resumed export continues (`com.atproto.transfer.exportAccount#resumePoint`). */
export interface ResumePoint {
  /** Commit the destination imported; the source omits the CAR if its head is still there. */
  repoCommit: string
  /**
   * Extension `repo-diff`: rev of `repoCommit`. A source whose head has moved may send only the
   * blocks written after it; the destination verifies them over what it holds.
   */
  repoRev?: string
  /** Last blob (source listing order) the destination committed; the listing continues after it. */
  blobCursor?: string
}

/** Body of `com.atproto.transfer.completeTransfer` (section 2.2). */
export interface CompleteTransferInput {
  did: string
  transferId: string
  plcSignatureToken: string
  newPdsEndpoint: string
  /** `did:key` of the destination's signing key. */
  newSigningKey: string
  newRotationKeys: string[]
}

/** Response of `com.atproto.transfer.completeTransfer`. */
export interface CompleteTransferOutput {
  signedPlcOperation: Record<string, unknown>
}

/** Query parameters of `com.atproto.transfer.getTransferStatus` (section 2.3). */
export interface GetTransferStatusParams {
  transferId: string
}

/** Known transfer states; the lexicon leaves the set open, so other strings may appear. */
export type TransferStatus =
  | 'pending'
  | 'exporting'
  | 'importing'
  | 'completing'
  | 'completed'
  | 'failed'
  | (string & {})

/** Progress counters (`com.atproto.transfer.defs#progress`). */
export interface TransferProgress {
  framesReceived?: number
  bytesReceived?: number
  framesSent?: number
  bytesSent?: number
  blobsReceived?: number
  blobsSent?: number
  blobsMissing?: number
}

/** Response of `com.atproto.transfer.getTransferStatus`. */
export interface GetTransferStatusOutput {
  transferId: string
  did: string
  status: TransferStatus
  progress: TransferProgress
  error?: string
  reason?: string
}

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i

/** True if `s` is a UUIDv7 in RFC 9562 text form: version nibble 7, variant bits `10`. */
export function isUuidV7(s: string): boolean {
  return UUID_V7.test(s)
}

/** Validates an `exportAccount` body; throws `InvalidRequest` naming the bad field. */
export function validateExportAccountInput(body: unknown): ExportAccountInput {
  const value = checkInput(NSID.exportAccount, body) as ExportAccountInput
  checkTransferId(value.transferId)
  return value
}

/** Validates a `completeTransfer` body; throws `InvalidRequest` naming the bad field. */
export function validateCompleteTransferInput(body: unknown): CompleteTransferInput {
  const value = checkInput(NSID.completeTransfer, body) as CompleteTransferInput
  checkTransferId(value.transferId)
  return value
}

/** Body of `com.atproto.transfer.requestPlcToken` (extension `plc-token-refresh`). */
export interface RequestPlcTokenInput {
  did: string
  transferId: string
}

/** Validates a `requestPlcToken` body; throws `InvalidRequest` naming the bad field. */
export function validateRequestPlcTokenInput(body: unknown): RequestPlcTokenInput {
  const value = checkInput(NSID.requestPlcToken, body) as RequestPlcTokenInput
  checkTransferId(value.transferId)
  return value
}

/**
 * Validates `getTransferStatus` query parameters (strings, as parsed from the URL); throws
 * `InvalidRequest` naming the bad parameter.
 */
export function validateGetTransferStatusParams(query: unknown): GetTransferStatusParams {
  let value: Record<string, unknown> | undefined
  try {
    value = transferLexicons.assertValidXrpcParams(NSID.getTransferStatus, query)
  } catch (err) {
    throw invalidRequest(err)
  }
  const transferId = value?.transferId as string
  checkTransferId(transferId)
  return { transferId }
}

/** Validates a `getTransferStatus` response from a peer; throws a plain `Error` with the lexicon message. */
export function validateGetTransferStatusOutput(value: unknown): GetTransferStatusOutput {
  return checkOutput(NSID.getTransferStatus, value) as GetTransferStatusOutput
}

/** Validates a `completeTransfer` response from a peer; throws a plain `Error` with the lexicon message. */
export function validateCompleteTransferOutput(value: unknown): CompleteTransferOutput {
  return checkOutput(NSID.completeTransfer, value) as CompleteTransferOutput
}

function checkInput(nsid: string, body: unknown): unknown {
  try {
    return transferLexicons.assertValidXrpcInput(nsid, body)
  } catch (err) {
    throw invalidRequest(err)
  }
}

function checkOutput(nsid: string, value: unknown): unknown {
  try {
    return transferLexicons.assertValidXrpcOutput(nsid, value)
  } catch (err) {
    // A peer's malformed response is not the caller's bad request, so no XRPC error name here.
    throw new Error(`${nsid} output: ${messageOf(err)}`, { cause: err })
  }
}

// The transfer ID is bound into the key schedule and AAD; a strict format keeps IDs comparable byte-for-byte.
function checkTransferId(transferId: string): void {
  if (!isUuidV7(transferId)) throw new TransferError('InvalidRequest', 'transferId must be a UUIDv7')
}

function invalidRequest(err: unknown): TransferError {
  return new TransferError('InvalidRequest', messageOf(err), { cause: err })
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
