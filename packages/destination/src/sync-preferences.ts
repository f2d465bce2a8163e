/**
 * Preferences from a source's `app.bsky.actor.getPreferences`. Invariant: they reach the sink
 * only after `validatePreferences` accepted them, the check the v1 preferences frame gets.
 */
import { validatePreferences, WireError } from '@pds-transfer/core'
import { ImportFailure } from './import-failure.ts'
import type { SourceClient } from './source-client.ts'
import { fetchStreaming, readJson } from './sync-retry.ts'

/** Largest getPreferences answer we read (it is a small JSON document; the v1 frame's limit). */
const MAX_PREFERENCES_BYTES = 16 * 1024 * 1024

/**
 * Items the reference PDS derives when it answers (`declaredAgePref`, from the birth date of
 * `personalDetailsPref`) and does not store: not the user's data, so not moved.
 */
const DERIVED_PREF_TYPES: ReadonlySet<string> = new Set(['app.bsky.actor.defs#declaredAgePref'])

/**
 * The account's validated preferences, without the derived items. Throws
 * `ImportFailure('PreferencesInvalid')` for an answer that does not validate.
 */
export async function readPreferences(client: SourceClient, stallTimeoutMs: number): Promise<unknown[]> {
  const answer = await fetchStreaming(
    (signal) => client.fetch('/xrpc/app.bsky.actor.getPreferences', { signal }),
    'getPreferences',
    stallTimeoutMs,
    (_res, body) =>
      readJson(body, {
        maxBytes: MAX_PREFERENCES_BYTES,
        what: 'getPreferences',
        reason: 'PreferencesInvalid',
      }),
  )
  let items: unknown[]
  try {
    items = validatePreferences((answer as { preferences?: unknown } | null)?.preferences)
  } catch (err) {
    if (err instanceof WireError)
      throw new ImportFailure('PreferencesInvalid', `getPreferences: ${err.message}`, { cause: err })
    throw err
  }
  return items.filter((item) => !DERIVED_PREF_TYPES.has((item as { $type: string }).$type))
}
