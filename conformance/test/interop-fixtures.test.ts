import { readFileSync } from 'node:fs'
import { Secp256k1Keypair } from '@atproto/crypto'
import { cidForCbor, parseCid } from '@atproto/lex-data'
import { MemoryBlockstore, MST, mstUtil } from '@atproto/repo'
import { InvalidRepoError, mstLayer, verifyMst } from '@pds-transfer/destination'
import { beforeAll, describe, expect, it } from 'vitest'
import { buildRepoCar, flatNode, type RepoAuthor } from '../src/fixtures/repo-car.ts'
import { MemoryStaging, verifyCarWithDestination } from '../src/harness/memory-staging.ts'

/**
 * The public atproto interop fixtures (bluesky-social/atproto-interop-tests, vendored in
 * conformance/vectors/interop/ with the commit they came from) against the destination's repo
 * verifier: MST key heights and prefixes, trees built from the example and commit-proof keys,
 * data-model CBOR, and the NSID, record key and TID syntax it checks repo paths and revs with.
 */
const dir = new URL('../vectors/interop/', import.meta.url)
const json = <T>(name: string): T => JSON.parse(readFileSync(new URL(name, dir), 'utf8')) as T
/** A fixture text file's lines, without comments and blank lines. */
const lines = (name: string): string[] =>
  readFileSync(new URL(name, dir), 'utf8')
    .split('\n')
    .filter((l) => l.length > 0 && !l.startsWith('#'))

/** The tree `@atproto/repo` builds of `keys` (each leaf `value`), as staged blocks and its root. */
async function tree(keys: string[], value: string) {
  let mst = await MST.create(new MemoryBlockstore(), [])
  for (const key of keys) mst = await mst.add(key, parseCid(value))
  const { root, blocks } = await mst.getUnstoredBlocks()
  const staging = new MemoryStaging()
  await staging.put([...blocks.entries()].map((b) => ({ cid: b.cid.bytes, bytes: b.bytes })))
  return { root, staging }
}

/** The keys our MST walk yields, in order. */
async function walked(staging: MemoryStaging, root: Parameters<typeof verifyMst>[1]): Promise<string[]> {
  const keys: string[] = []
  await verifyMst(staging, root, async (key) => {
    keys.push(key)
  })
  return keys
}

describe('atproto interop fixtures', () => {
  let author: RepoAuthor

  beforeAll(async () => {
    author = { did: 'did:plc:interopfixtures000000000', key: await Secp256k1Keypair.create() }
  })

  const verdict = (car: Promise<Uint8Array>) =>
    car
      .then((bytes) => verifyCarWithDestination(bytes, author.did, author.key.did()))
      .then(
        () => 'accept',
        (err: unknown) => {
          if (!(err instanceof InvalidRepoError)) throw err
          return 'refuse'
        },
      )
  /** A repo of one record at `path`, its single MST node written by hand (any key syntax). */
  const onePathRepo = (path: string) =>
    buildRepoCar(author, { records: [{ path, value: { $type: 'com.example.record' } }], root: flatNode })

  it('mst/key_heights.json: our MST layer of each key', async () => {
    const cases = json<{ key: string; height: number }[]>('key_heights.json')
    expect(cases.length).toBeGreaterThan(0)
    for (const { key, height } of cases) {
      expect(mstLayer(key), key).toBe(height)
      expect(await mstUtil.leadingZerosOnHash(key), key).toBe(height)
    }
  })

  it('mst/common_prefix.json: the prefix length the compaction check demands', () => {
    for (const { left, right, len } of json<{ left: string; right: string; len: number }[]>(
      'common_prefix.json',
    )) {
      expect(mstUtil.countPrefixLen(left, right), `${left} / ${right}`).toBe(len)
    }
  })

  it('mst/example_keys.txt: each key at the layer it names; their tree walks whole and in order', async () => {
    const keys = lines('example_keys.txt')
    expect(keys).toHaveLength(156)
    for (const key of keys) expect(mstLayer(key), key).toBe(Number(key[1]))
    const { root, staging } = await tree(keys, LEAF)
    expect(await walked(staging, root)).toEqual([...keys].sort())
  })

  describe('firehose/commit-proof-fixtures.json: the trees before and after each commit', () => {
    const fixtures = json<
      {
        comment: string
        leafValue: string
        keys: string[]
        adds: string[]
        dels: string[]
        rootBeforeCommit: string
        rootAfterCommit: string
      }[]
    >('commit-proof-fixtures.json')
    it.each(fixtures)('$comment', async (f) => {
      const after = [...f.keys, ...f.adds].filter((k) => !f.dels.includes(k))
      for (const [keys, expected] of [
        [f.keys, f.rootBeforeCommit],
        [after, f.rootAfterCommit],
      ] as const) {
        const { root, staging } = await tree(keys, f.leafValue)
        expect(root.toString()).toBe(expected)
        expect(await walked(staging, root)).toEqual([...keys].sort())
      }
    })
  })

  it('data-model/data-model-fixtures.json: each CBOR is a record our verifier accepts, under its CID', async () => {
    const fixtures = json<{ cbor_base64: string; cid: string }[]>('data-model-fixtures.json')
    expect(fixtures.length).toBeGreaterThan(0)
    for (const f of fixtures) {
      const bytes = Buffer.from(f.cbor_base64, 'base64')
      expect((await cidForCbor(bytes)).toString()).toBe(f.cid)
      const car = buildRepoCar(author, { records: [{ path: 'com.example.record/self', bytes }] })
      expect(await verdict(car), f.cid).toBe('accept')
    }
  })

  it.each([
    ['valid', 'accept'],
    ['invalid', 'refuse'],
  ] as const)('syntax/nsid_syntax_%s.txt: as a repo path collection, %s', async (kind, expected) => {
    for (const nsid of lines(`nsid_syntax_${kind}.txt`)) {
      expect(await verdict(onePathRepo(`${nsid}/self`)), nsid).toBe(expected)
    }
  })

  it.each([
    ['valid', 'accept'],
    ['invalid', 'refuse'],
  ] as const)('syntax/recordkey_syntax_%s.txt: as a repo path record key, %s', async (kind, expected) => {
    for (const rkey of lines(`recordkey_syntax_${kind}.txt`)) {
      expect(await verdict(onePathRepo(`com.example.record/${rkey}`)), rkey).toBe(expected)
    }
  })

  it.each([
    ['valid', 'accept'],
    ['invalid', 'refuse'],
  ] as const)('syntax/tid_syntax_%s.txt: as a commit rev, %s', async (kind, expected) => {
    for (const rev of lines(`tid_syntax_${kind}.txt`)) {
      const car = buildRepoCar(author, { records: [], commit: (c) => ({ ...c, rev }) })
      expect(await verdict(car), rev).toBe(expected)
    }
  })
})

/** The leaf value the commit-proof fixtures use, for the example-key tree too. */
const LEAF = 'bafyreie5cvv4h45feadgeuwhbcutmh6t2ceseocckahdoe6uat64zmz454'
