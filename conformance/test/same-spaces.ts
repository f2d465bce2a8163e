import { Readable } from 'node:stream'
import { expect } from 'vitest'
import type { SpaceAccount } from '../src/fixtures/space-account.ts'
import type { SqliteSpaceStore } from '../src/store/sqlite-space-store.ts'

/** `alice`'s permissioned repos, blobs and owned space are the same at `to` as at `from`. */
export async function expectSameSpaces(from: SqliteSpaceStore, to: SqliteSpaceStore, alice: SpaceAccount) {
  for (const space of [alice.owned, ...alice.joined]) {
    const before = await from.readRepo(space, alice.did)
    const after = await to.readRepo(space, alice.did)
    expect(after?.rev).toBe(before?.rev)
    expect(Buffer.from(after?.hash ?? [])).toEqual(Buffer.from(before?.hash ?? [1]))
    const norm = (r: typeof before) =>
      (r?.records ?? [])
        .map((x) => ({ ...x, bytes: Buffer.from(x.bytes) }))
        .sort((x, y) => (x.cid < y.cid ? -1 : 1))
    expect(norm(after)).toEqual(norm(before))
    const blobs = (await from.listBlobs(space, alice.did, { limit: 100 }))?.cids ?? []
    expect((await to.listBlobs(space, alice.did, { limit: 100 }))?.cids).toEqual(blobs)
    for (const cid of blobs)
      expect(await bytesOf(to, space, alice.did, cid)).toEqual(await bytesOf(from, space, alice.did, cid))
  }
  expect(await to.getSpace(alice.owned)).toEqual(await from.getSpace(alice.owned))
  expect((await to.listMembers(alice.owned, { limit: 100 }))?.members).toEqual(alice.members)
  for (const space of alice.joined) expect(await to.getSpace(space)).toBeUndefined()
}

async function bytesOf(store: SqliteSpaceStore, space: string, did: string, cid: string): Promise<Buffer> {
  const blob = await store.openBlob(space, did, cid)
  if (!blob) throw new Error(`no blob ${cid}`)
  const chunks: Uint8Array[] = []
  for await (const chunk of Readable.from(blob.bytes)) chunks.push(chunk)
  return Buffer.concat(chunks)
}
