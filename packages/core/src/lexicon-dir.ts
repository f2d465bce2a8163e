/**
 * Where the lexicon JSON documents are. Run from source (this workspace), the repository's
 * `/lexicons`, their source of truth; compiled (`dist/`, the published package), the copy the
 * build puts beside the code in `dist/lexicons`. Not exported from the package.
 */
export const LEXICON_DIR: URL = import.meta.url.endsWith('.ts')
  ? new URL('../../../lexicons/', import.meta.url)
  : new URL('./lexicons/', import.meta.url)
