import { bskyLexicons } from './bsky-lexicons.ts'
import { WireError } from './errors.ts'

/**
 * The preferences frame (`application/vnd.atproto.preferences+json`, section 2.1): a JSON array of
 * `app.bsky.actor.defs#preferences` items, validated per section 2.5 ("validate JSON schema conformance").
 */

const PREFERENCES_DEF = 'app.bsky.actor.defs#preferences'

/**
 * `$type`s of the preference union as the vendored app.bsky lexicons define it. The union is open, so
 * items outside it are kept unvalidated: a newer source may carry preferences this build has never seen,
 * and dropping them would lose user data in the move.
 */
const KNOWN_PREF_TYPES: ReadonlySet<string> = new Set(knownPrefTypes())

function knownPrefTypes(): string[] {
  const def = bskyLexicons.getDefOrThrow(PREFERENCES_DEF, ['array'])
  if (def.items.type !== 'union') throw new Error(`${PREFERENCES_DEF} is no longer an array of a union`)
  // Refs are stored resolved (`lex:app.bsky.actor.defs#adultContentPref`); `$type` values carry no prefix.
  return def.items.refs.map((ref) => ref.replace(/^lex:/, ''))
}

/** Parses and validates a preferences frame payload (UTF-8 JSON). Throws `InvalidPreferences`. */
export function parsePreferences(bytes: Uint8Array): unknown[] {
  let value: unknown
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch (err) {
    throw new WireError('InvalidPreferences', `not UTF-8 JSON: ${messageOf(err)}`, { cause: err })
  }
  return validatePreferences(value)
}

/**
 * Validates a parsed preferences array and returns it unchanged (lexicon defaults are not filled in,
 * so what arrives is what gets stored). Throws `InvalidPreferences` naming the offending item.
 */
export function validatePreferences(value: unknown): unknown[] {
  if (!Array.isArray(value)) throw new WireError('InvalidPreferences', 'preferences must be a JSON array')
  value.forEach((item: unknown, i) => {
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      throw new WireError('InvalidPreferences', `item ${i} must be an object`)
    }
    const { $type } = item as { $type?: unknown }
    if (typeof $type !== 'string') throw new WireError('InvalidPreferences', `item ${i} has no string $type`)
    if (!KNOWN_PREF_TYPES.has($type)) return
    let result: ReturnType<typeof bskyLexicons.validate>
    try {
      result = bskyLexicons.validate($type, item)
    } catch (err) {
      throw new WireError('InvalidPreferences', `item ${i} (${$type}): ${messageOf(err)}`, { cause: err })
    }
    if (!result.success) {
      throw new WireError('InvalidPreferences', `item ${i} (${$type}): ${result.error.message}`, {
        cause: result.error,
      })
    }
  })
  return value
}

/** Validates preferences and encodes them as the UTF-8 JSON payload of a preferences frame. */
export function encodePreferences(prefs: unknown[]): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(validatePreferences(prefs)))
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
