import { writeFileSync } from 'node:fs'
import { schemas } from '@atproto/api'
import type { LexiconDoc } from '@atproto/lexicon'
import { describe, expect, it } from 'vitest'
import { BSKY_LEXICON_IDS, bskyLexicons, readBskyLexicons } from '../src/bsky-lexicons.ts'

/**
 * The vendored app.bsky lexicons (lexicons/app/bsky/...) must be exactly those of the pinned
 * `@atproto/api` (a dev dependency only), so that preferences validation is as strict as the
 * library's. `UPDATE_BSKY_LEXICONS=1 pnpm vitest run packages/core/test/bsky-lexicons.test.ts`
 * rewrites them from the installed version (then run `biome check --write lexicons`).
 */
const ROOT_DEF = 'app.bsky.actor.defs#preferences'
const upstream = new Map<string, LexiconDoc>((schemas as LexiconDoc[]).map((d) => [d.id, d]))

/** Documents holding every definition `ref` reaches (refs, unions, nested objects). */
function closure(ref: string): string[] {
  const docs = new Set<string>()
  const seen = new Set<string>()
  const queue = [ref]
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    const absolute = next.replace(/^lex:/, '')
    if (seen.has(absolute)) continue
    seen.add(absolute)
    const [id = '', name = 'main'] = absolute.split('#')
    const def = upstream.get(id)?.defs[name]
    if (!def) throw new Error(`${absolute} is not in @atproto/api`)
    docs.add(id)
    for (const r of refsIn(def))
      queue.push(r.startsWith('#') ? `${id}${r}` : r.includes('#') ? r : `${r}#main`)
  }
  return [...docs].sort()
}

function refsIn(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const n of node) refsIn(n, out)
  else if (node && typeof node === 'object') {
    const { type, ref, refs } = node as { type?: string; ref?: string; refs?: string[] }
    if (type === 'ref' && ref) out.push(ref)
    if (type === 'union' && refs) out.push(...refs)
    for (const v of Object.values(node)) refsIn(v, out)
  }
  return out
}

/** The document as its JSON source has it: `@atproto/api`'s codegen writes refs as `lex:` URIs. */
function asSource(doc: LexiconDoc): LexiconDoc {
  const local = (ref: string) => {
    const bare = ref.replace(/^lex:/, '')
    return bare.startsWith(`${doc.id}#`) ? bare.slice(doc.id.length) : bare
  }
  const walk = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(walk)
    if (!node || typeof node !== 'object') return node
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(node)) out[k] = v
    for (const [k, v] of Object.entries(out)) out[k] = walk(v)
    const { type } = out as { type?: string }
    if (type === 'ref' && typeof out.ref === 'string') out.ref = local(out.ref)
    if (type === 'union' && Array.isArray(out.refs)) out.refs = (out.refs as string[]).map(local)
    return out
  }
  return walk(doc) as LexiconDoc
}

describe('vendored app.bsky lexicons', () => {
  if (process.env.UPDATE_BSKY_LEXICONS) {
    for (const id of closure(ROOT_DEF)) {
      const path = new URL(`../../../lexicons/${id.split('.').join('/')}.json`, import.meta.url)
      writeFileSync(path, `${JSON.stringify(asSource(upstream.get(id) as LexiconDoc), null, 2)}\n`)
    }
  }

  it('are exactly the documents #preferences reaches', () => {
    expect([...BSKY_LEXICON_IDS].sort()).toEqual(closure(ROOT_DEF))
  })

  it('equal those of the pinned @atproto/api', () => {
    for (const doc of readBskyLexicons()) expect(doc).toEqual(asSource(upstream.get(doc.id) as LexiconDoc))
  })

  it('resolve every preference type of the union', () => {
    const def = bskyLexicons.getDefOrThrow(ROOT_DEF, ['array'])
    if (def.items.type !== 'union') throw new Error('not a union')
    expect(def.items.refs.length).toBeGreaterThan(10)
    for (const ref of def.items.refs) expect(bskyLexicons.getDef(ref)).toBeDefined()
  })
})
