import { readdirSync, readFileSync } from 'node:fs'
import { type LexiconDoc, Lexicons, parseLexiconDoc } from '@atproto/lexicon'
import { LEXICON_DIR } from './lexicon-dir.ts'

/**
 * The alpha lexicons of proposal 0016 (permissioned data): `com.atproto.space.*` (the protocol)
 * and `com.atproto.simplespace.*` (the space management every PDS must serve), vendored
 * byte-for-byte from bluesky-social/atproto at {@link SPACE_LEXICON_COMMIT} (branch
 * `permissioned-data`) under `/lexicons/com/atproto/{space,simplespace}`.
 */

/** The bluesky-social/atproto commit the vendored 0016 lexicons were copied from. */
export const SPACE_LEXICON_COMMIT = '89deb9faca20e56fa2a262fe9746ed52bc1095ba'

/** The string format 0016 adds for `at://{authority}/space/{type}/{skey}`. */
export const SPACE_REF_FORMAT = 'space-ref'

const NAMESPACES = ['space', 'simplespace'] as const

/** The vendored documents exactly as on disk (ids sorted), unparsed. */
export function readSpaceLexiconJson(): { id: string; json: unknown }[] {
  const docs: { id: string; json: unknown }[] = []
  for (const ns of NAMESPACES) {
    const dir = new URL(`com/atproto/${ns}/`, LEXICON_DIR)
    for (const file of readdirSync(dir).sort()) {
      if (!file.endsWith('.json')) continue
      docs.push({
        id: `com.atproto.${ns}.${file.slice(0, -'.json'.length)}`,
        json: JSON.parse(readFileSync(new URL(file, dir), 'utf8')),
      })
    }
  }
  return docs
}

/**
 * The documents parsed by `@atproto/lexicon`. The installed release (0.7.19) predates the
 * `space-ref` string format that the alpha branch added, and rejects a document naming it; the
 * format is dropped at load (the field stays a string) and {@link parseSpaceRef} checks it in
 * code wherever one is read. Recorded in spec/permissioned-data.md.
 */
export function readSpaceLexicons(): LexiconDoc[] {
  return readSpaceLexiconJson().map(({ json }) => parseLexiconDoc(withoutSpaceRefFormat(json)) as LexiconDoc)
}

/** A `Lexicons` collection of the 0016 documents, for validating XRPC params, inputs and outputs. */
export const spaceLexicons = new Lexicons(readSpaceLexicons())

function withoutSpaceRefFormat(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutSpaceRefFormat)
  if (value === null || typeof value !== 'object') return value
  const out: Record<string, unknown> = {}
  for (const [key, inner] of Object.entries(value)) {
    if (key === 'format' && inner === SPACE_REF_FORMAT) continue
    out[key] = withoutSpaceRefFormat(inner)
  }
  return out
}
