import { decode, encode } from 'cborg'
import { WireError } from './errors.ts'

/**
 * Private account state (section 2.8). The common fields are RECOMMENDED; the optional ones are
 * implementation-specific. Unknown fields are ignored on import, as the section requires.
 */
export interface AccountState {
  email?: string
  emailConfirmed?: boolean
  /** Unused invite codes. */
  inviteCodes?: string[]
  /** Hashed app passwords; the hash format is implementation-specific and may not be portable. */
  appPasswords?: Array<Record<string, unknown>>
  notificationRouting?: Record<string, unknown>
  mutedWords?: string[]
  /** AT URIs of pinned feed generators. */
  pinnedFeeds?: string[]
}

type FieldCheck = (value: unknown) => boolean

const isString: FieldCheck = (v) => typeof v === 'string'
const isStringArray: FieldCheck = (v) => Array.isArray(v) && v.every(isString)
const isMap = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array)

const FIELDS: Record<keyof AccountState, { type: string; check: FieldCheck }> = {
  email: { type: 'a text string', check: isString },
  emailConfirmed: { type: 'a boolean', check: (v) => typeof v === 'boolean' },
  inviteCodes: { type: 'an array of text strings', check: isStringArray },
  appPasswords: { type: 'an array of maps', check: (v) => Array.isArray(v) && v.every(isMap) },
  notificationRouting: { type: 'a map', check: isMap },
  mutedWords: { type: 'an array of text strings', check: isStringArray },
  pinnedFeeds: { type: 'an array of text strings', check: isStringArray },
}

/**
 * The state without credentials (app password hashes): what may cross between PDSes. The
 * current draft says credentials MUST NOT be transferred; a hash in one PDS's format is a
 * sign-in secret at another (spec/decisions.md, D24). Applied by the source before sending and
 * by the destination before storing, whatever the peer does.
 */
export function withoutCredentials(state: AccountState): AccountState {
  const { appPasswords: _credentials, ...rest } = state
  return rest
}

/** Deterministic CBOR of the state (cborg sorts map keys); `{}` encodes to the single byte 0xa0. */
export function encodeAccountState(state: AccountState): Uint8Array {
  const out: Record<string, unknown> = {}
  for (const [name, value] of Object.entries(state)) {
    if (value === undefined) continue
    const field = FIELDS[name as keyof AccountState]
    if (field && !field.check(value))
      throw new WireError('InvalidAccountState', `${name} must be ${field.type}`)
    out[name] = value
  }
  return encode(out)
}

/**
 * Decodes a received state frame. Rejects anything but one definite-length CBOR map with text
 * keys, no duplicates and no trailing bytes, and known fields of the wrong type (the section
 * makes importing them a MUST, so a mistyped one cannot be skipped silently). Unknown fields are
 * returned by name in `ignoredFields` and otherwise dropped.
 */
export function decodeAccountState(bytes: Uint8Array): { state: AccountState; ignoredFields: string[] } {
  let value: unknown
  try {
    value = decode(bytes, { rejectDuplicateMapKeys: true, allowIndefinite: false, allowUndefined: false })
  } catch (err) {
    throw new WireError('InvalidAccountState', `not valid CBOR: ${(err as Error).message}`, { cause: err })
  }
  if (!isMap(value)) throw new WireError('InvalidAccountState', 'the state must be a CBOR map')
  return checkAccountState(value)
}

/**
 * The current draft's `privateState` (JSON, section 5), checked as a state frame is: known
 * fields of the wrong type are refused, unknown ones returned in `ignoredFields` and dropped
 * (the draft: "MUST silently ignore"). Credentials are dropped too (`withoutCredentials`).
 */
export function accountStateFromJson(value: unknown): { state: AccountState; ignoredFields: string[] } {
  if (!isMap(value)) throw new WireError('InvalidAccountState', 'privateState must be a JSON object')
  const { state, ignoredFields } = checkAccountState(value)
  return { state: withoutCredentials(state), ignoredFields }
}

function checkAccountState(value: Record<string, unknown>): { state: AccountState; ignoredFields: string[] } {
  const state: Record<string, unknown> = {}
  const ignoredFields: string[] = []
  for (const [name, fieldValue] of Object.entries(value)) {
    const field = Object.hasOwn(FIELDS, name) ? FIELDS[name as keyof AccountState] : undefined
    if (!field) {
      ignoredFields.push(name)
      continue
    }
    if (!field.check(fieldValue)) throw new WireError('InvalidAccountState', `${name} must be ${field.type}`)
    state[name] = fieldValue
  }
  return { state: state as AccountState, ignoredFields }
}
