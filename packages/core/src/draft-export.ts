import { readFileSync } from 'node:fs'
import { type LexiconDoc, Lexicons, parseLexiconDoc } from '@atproto/lexicon'
import { TransferError } from './errors.ts'
import { LEXICON_DIR } from './lexicon-dir.ts'
import { isUuidV7, NSID } from './lexicons.ts'

/**
 * The current draft's JSON `exportAccount` (proposal 0015 §2.1) beside our v1 stream at the same
 * NSID, and its capability negotiation (§7). How the two are told apart is decided in
 * spec/dialect-draft.md: the input's shape, since only v1 carries an encryption key.
 */

/** Capability tokens the draft defines and we implement (§7); any other token is ignored. */
export const CAPABILITY = {
  /** exportAccount, completeTransfer and the sync endpoints; always implied. */
  base: 'base',
  /** `app.bsky.actor.getPreferences` is served and may be pulled. */
  preferences: 'preferences',
  /** A pull may continue after a cut: the same transferId again, the listBlobs cursor kept. */
  resumable: 'resumable',
  /**
   * Ours, not the draft's: the account's permissioned data (proposal 0016) may be pulled over
   * `com.atproto.space.*` and `com.atproto.simplespace.*` (spec/permissioned-data.md).
   */
  permissionedData: 'permissioned-data',
} as const

/** Body of the draft's `exportAccount`. */
export interface DraftExportInput {
  did: string
  transferId: string
  /** Absent means `["base"]` (§7 rule 5). */
  capabilities?: string[]
}

/** Answer of the draft's `exportAccount`. */
export interface DraftExportOutput {
  transferId: string
  capabilities: string[]
  /** JSON private state (§5); checked by `accountStateFromJson`. */
  privateState: Record<string, unknown>
}

const draftDoc: LexiconDoc = parseLexiconDoc(
  JSON.parse(
    readFileSync(new URL('draft-0015/com/atproto/transfer/exportAccount.json', LEXICON_DIR), 'utf8'),
  ),
)
// Its own collection: the same NSID as v1's document, which a `Lexicons` holds only once.
const draftLexicons = new Lexicons([structuredClone(draftDoc)])

/** Fields only a v1 request carries: the stream's HPKE suite and the key it is sealed to. */
const V1_ONLY = ['algorithm', 'encryptionKey', 'extensions', 'resume'] as const

/**
 * Whether an `exportAccount` body is the draft's: a JSON object without any v1-only field. A
 * body mixing both (`capabilities` beside `encryptionKey`) is refused by name rather than
 * guessed at, since either reading would answer something the caller did not ask for.
 */
export function isDraftExportRequest(body: unknown): boolean {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return false
  const v1 = V1_ONLY.filter((f) => Object.hasOwn(body, f))
  if (v1.length === 0) return true
  if (Object.hasOwn(body, 'capabilities')) {
    throw new TransferError(
      'InvalidRequest',
      `the body mixes the draft's capabilities with v1's ${v1.join(', ')}: send capabilities for the JSON export, or algorithm and encryptionKey for the encrypted stream`,
    )
  }
  return false
}

/** Validates a draft `exportAccount` body; throws `InvalidRequest` naming the bad field. */
export function validateDraftExportInput(body: unknown): DraftExportInput {
  let value: DraftExportInput
  try {
    value = draftLexicons.assertValidXrpcInput(NSID.exportAccount, body) as DraftExportInput
  } catch (err) {
    throw new TransferError('InvalidRequest', (err as Error).message, { cause: err })
  }
  if (!isUuidV7(value.transferId)) throw new TransferError('InvalidRequest', 'transferId must be a UUIDv7')
  return value
}

/** Validates a draft `exportAccount` answer from a peer; throws a plain `Error` naming what is wrong. */
export function validateDraftExportOutput(value: unknown): DraftExportOutput {
  try {
    return draftLexicons.assertValidXrpcOutput(NSID.exportAccount, value) as DraftExportOutput
  } catch (err) {
    throw new Error(`${NSID.exportAccount} output: ${(err as Error).message}`, { cause: err })
  }
}

/**
 * The source's answer to a capability request (§7): the requested tokens it supports, in the
 * order asked, each once; `base` is always supported, unknown tokens are dropped, never an error.
 */
export function negotiateCapabilities(
  requested: readonly string[] | undefined,
  supported: readonly string[],
) {
  const have = new Set<string>([CAPABILITY.base, ...supported])
  return [...new Set(requested ?? [CAPABILITY.base])].filter((c) => have.has(c))
}

/**
 * What the destination may use (§7 rule 3): the tokens both asked for and answered. A token the
 * source answers without being asked is ignored, as is one neither side knows.
 */
export function usableCapabilities(asked: readonly string[], answered: readonly string[]): string[] {
  return asked.filter((c) => answered.includes(c))
}
