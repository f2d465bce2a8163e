import { readFileSync } from 'node:fs'
import { canonicalKeyOrder, SpaceSetHash, setHashElement, verifySpaceRepoCar } from '@pds-transfer/core'
import { describe, expect, it } from 'vitest'

/**
 * Interop with the alpha implementation of 0016 (bluesky-social/atproto `packages/space` at
 * 89deb9fa): a permissioned repo CAR it made (its RepoCommit.sign and serializeRepo, run with
 * only import paths changed; see the vector's description) verifies with ours, record by record.
 * The reverse (its verifyRepoCar accepting a CAR of ours) was checked when the vector was made.
 */
const vector = JSON.parse(
  readFileSync(new URL('../vectors/space-repo-alpha.json', import.meta.url), 'utf8'),
) as {
  space: string
  author: string
  rev: string
  didKey: string
  records: { path: string; cid: string }[]
  hash: string
  car: string
}
const car = new Uint8Array(Buffer.from(vector.car, 'base64'))

describe("the alpha implementation's permissioned repo CAR", () => {
  it('verifies with ours: commit, index set hash, every record in its order', async () => {
    const repo = await verifySpaceRepoCar(car, vector)
    expect(repo.commit.rev).toBe(vector.rev)
    expect(Buffer.from(repo.commit.hash).toString('hex')).toBe(vector.hash)
    // The vector lists them as written; the CAR holds them in canonical DAG-CBOR key order.
    const inIndexOrder = [...vector.records].sort((a, b) => canonicalKeyOrder(a.path, b.path))
    expect(repo.records.map((r) => ({ path: `${r.collection}/${r.rkey}`, cid: r.cid }))).toEqual(inIndexOrder)
  })

  it('our set hash of its records is its commit hash', () => {
    const setHash = new SpaceSetHash()
    for (const { path, cid } of vector.records) {
      const [collection = '', rkey = ''] = path.split('/')
      setHash.add(setHashElement(collection, rkey, cid))
    }
    expect(Buffer.from(setHash.digest()).toString('hex')).toBe(vector.hash)
  })

  it('is refused for another author', async () => {
    await expect(
      verifySpaceRepoCar(car, { ...vector, author: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa' }),
    ).rejects.toThrow(/MAC/)
  })
})
