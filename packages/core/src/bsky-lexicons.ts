import { readFileSync } from 'node:fs'
import { type LexiconDoc, Lexicons, parseLexiconDoc } from '@atproto/lexicon'
import { LEXICON_DIR } from './lexicon-dir.ts'

/**
 * The `app.bsky` lexicon documents that preferences validation needs: `app.bsky.actor.defs` and
 * every document its `#preferences` definition reaches through refs. They are vendored as JSON
 * under `/lexicons` (copied from `@atproto/api`, checked against it by `test/bsky-lexicons.test.ts`)
 * because importing `@atproto/api` for them loads all of its ~300 generated lexicons and client
 * classes: about 60 MiB of heap in every process that touches a preferences frame.
 */
export const BSKY_LEXICON_IDS = [
  'app.bsky.actor.defs',
  'app.bsky.feed.postgate',
  'app.bsky.feed.threadgate',
] as const

function loadDoc(id: string): LexiconDoc {
  const url = new URL(`${id.split('.').join('/')}.json`, LEXICON_DIR)
  // parseLexiconDoc checks the document itself, so a damaged copy fails at load, not at first use.
  return parseLexiconDoc(JSON.parse(readFileSync(url, 'utf8')))
}

/** The vendored documents, as on disk (refs not yet resolved to `lex:` URIs). */
export function readBskyLexicons(): LexiconDoc[] {
  return BSKY_LEXICON_IDS.map(loadDoc)
}

/** A `Lexicons` collection holding the vendored app.bsky documents. */
export const bskyLexicons = new Lexicons(readBskyLexicons())
