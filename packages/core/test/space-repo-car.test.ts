import { Secp256k1Keypair } from '@atproto/crypto'
import { encode } from '@atproto/lex-cbor'
import { cidForCbor, type LexMap } from '@atproto/lex-data'
import { describe, expect, it } from 'vitest'
import { type SignedSpaceCommit, signSpaceCommit } from '../src/space-commit.ts'
import {
  encodeSpaceRepoCar,
  InvalidSpaceRepoError,
  type SpaceRecordBlock,
  verifySpaceRepoCar,
} from '../src/space-repo-car.ts'
import { SpaceSetHash, setHashElement } from '../src/space-set-hash.ts'

const SPACE = 'at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/space/com.example.forum/default'
const AUTHOR = 'did:plc:bbbbbbbbbbbbbbbbbbbbbbbb'
const REV = '3lbgkz6qo5c2a'

async function record(collection: string, rkey: string, value: LexMap): Promise<SpaceRecordBlock> {
  const bytes = encode(value)
  return { collection, rkey, cid: (await cidForCbor(bytes)).toString(), bytes }
}

async function repo(records: SpaceRecordBlock[], options: { hashOf?: SpaceRecordBlock[] } = {}) {
  const key = await Secp256k1Keypair.create()
  const setHash = new SpaceSetHash()
  for (const r of options.hashOf ?? records) setHash.add(setHashElement(r.collection, r.rkey, r.cid))
  const commit = await signSpaceCommit({ space: SPACE, author: AUTHOR, rev: REV }, setHash.digest(), key)
  return { key, commit, expected: { space: SPACE, author: AUTHOR, didKey: key.did() } }
}

const records = await Promise.all([
  record('com.example.thread', '3k2aaaaaaaaaa', { $type: 'com.example.thread', title: 'hello' }),
  record('com.example.reply', '3k2aaaaaaaaab', { $type: 'com.example.reply', text: 'hi' }),
  record('com.example.reply', 'z', { $type: 'com.example.reply', text: 'short key' }),
])

describe('permissioned repo CAR (0016 "Repo serialization")', () => {
  it('round-trips: roots [commit, index], records in canonical key order, each verified', async () => {
    const { commit, expected } = await repo(records)
    const car = await encodeSpaceRepoCar(commit, records)
    const verified = await verifySpaceRepoCar(car, expected)
    expect(verified.commit).toEqual(commit)
    // Shorter keys first, then bytewise (DAG-CBOR canonical map order).
    expect(verified.records.map((r) => `${r.collection}/${r.rkey}`)).toEqual([
      'com.example.reply/z',
      'com.example.reply/3k2aaaaaaaaab',
      'com.example.thread/3k2aaaaaaaaaa',
    ])
    for (const r of verified.records)
      expect(Buffer.from(r.bytes)).toEqual(Buffer.from(records.find((x) => x.cid === r.cid)?.bytes ?? []))
  })

  it('an empty repo verifies', async () => {
    const { commit, expected } = await repo([])
    expect((await verifySpaceRepoCar(await encodeSpaceRepoCar(commit, []), expected)).records).toEqual([])
  })

  it('refuses a commit for another author or space, or signed by another key', async () => {
    const { commit, expected } = await repo(records)
    const car = await encodeSpaceRepoCar(commit, records)
    await expect(verifySpaceRepoCar(car, { ...expected, author: 'did:plc:c' })).rejects.toThrow(/MAC/)
    await expect(verifySpaceRepoCar(car, { ...expected, space: `${SPACE}x` })).rejects.toThrow(/MAC/)
    const other = await Secp256k1Keypair.create()
    await expect(verifySpaceRepoCar(car, { ...expected, didKey: other.did() })).rejects.toThrow(/signature/)
  })

  it('refuses an index whose set hash is not the commit (a record added, dropped or swapped)', async () => {
    const extra = await record('com.example.reply', '3k2aaaaaaaaac', { text: 'smuggled' })
    const signedForTwo = await repo(records.slice(0, 2))
    await expect(
      verifySpaceRepoCar(await encodeSpaceRepoCar(signedForTwo.commit, records), signedForTwo.expected),
    ).rejects.toThrow(/set hash/)
    const signedForThree = await repo(records)
    await expect(
      verifySpaceRepoCar(
        await encodeSpaceRepoCar(signedForThree.commit, [...records.slice(0, 2), extra]),
        signedForThree.expected,
      ),
    ).rejects.toThrow(/set hash/)
  })

  it('refuses a record block whose bytes are not its CID, or a CAR cut short', async () => {
    const { commit, expected } = await repo(records)
    const car = await encodeSpaceRepoCar(commit, records)
    const tampered = new Uint8Array(car)
    tampered[tampered.length - 2] = (tampered[tampered.length - 2] as number) ^ 0xff
    await expect(verifySpaceRepoCar(tampered, expected)).rejects.toThrow(/do not hash/)
    await expect(verifySpaceRepoCar(car.subarray(0, car.length - 3), expected)).rejects.toThrow(/cut/)
    await expect(verifySpaceRepoCar(car.subarray(0, car.length - 3), expected)).rejects.toBeInstanceOf(
      InvalidSpaceRepoError,
    )
  })

  it('refuses a CAR with one root, or with a non-commit first block', async () => {
    const { commit, expected } = await repo(records)
    const commitBytes = encode(commit as unknown as LexMap)
    const cid = await cidForCbor(commitBytes)
    const header = encode({ version: 1, roots: [cid] })
    const oneRoot = Buffer.concat([Buffer.from([header.length]), header])
    await expect(verifySpaceRepoCar(oneRoot, expected)).rejects.toThrow(/two roots/)
    const forged: SignedSpaceCommit = { ...commit, rev: '3lbgkz6qo5c2b' }
    await expect(verifySpaceRepoCar(await encodeSpaceRepoCar(forged, records), expected)).rejects.toThrow(
      InvalidSpaceRepoError,
    )
  })
})
