import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { AtUri } from '@atproto/syntax'

/** A row of the actor database's `backlink` table. */
export interface Backlink {
  uri: string
  path: string
  linkTo: string
}

type GetBacklinks = (uri: AtUri, record: unknown) => Backlink[]

// The reference PDS's own rule for which records link to what (follows and blocks by subject,
// likes and reposts by subject URI), which its `indexRecord` applies. The package does not
// export it, so it is loaded from the installed version's file, so that the rule cannot drift.
const pdsDist = dirname(createRequire(import.meta.url).resolve('@atproto/pds'))
const reader = (await import(pathToFileURL(join(pdsDist, 'actor-store/record/reader.js')).href)) as {
  getBacklinks: GetBacklinks
}

/** The backlinks the reference PDS records for `record` at `uri`. */
export const getBacklinks: GetBacklinks = reader.getBacklinks
