import { createHash } from 'node:crypto'
import { decode, encode } from '@atproto/lex-cbor'
import { type Cid, cidForCbor, decodeCid, isCid, type LexMap, parseCid } from '@atproto/lex-data'
import { isValidNsid, isValidRecordKey } from '@atproto/syntax'
import { varint } from 'multiformats'
import { checkSpaceCommit, type SignedSpaceCommit } from './space-commit.ts'
import { SpaceSetHash, setHashElement } from './space-set-hash.ts'

/** One record of a permissioned repo: its path, CID (dag-cbor) and DAG-CBOR bytes. */
export interface SpaceRecordBlock {
  collection: string
  rkey: string
  cid: string
  bytes: Uint8Array
}

/** A permissioned repo whose CAR verified: every record is in the signed set hash. */
export interface VerifiedSpaceRepo {
  commit: SignedSpaceCommit
  /** Records in index order (canonical DAG-CBOR key order of `{collection}/{rkey}`). */
  records: SpaceRecordBlock[]
}

/** A permissioned repo CAR that does not verify per 0016 ("Repo serialization"). */
export class InvalidSpaceRepoError extends Error {
  override readonly name = 'InvalidSpaceRepoError'
}

const DAG_CBOR = 0x71
const SHA2_256 = 0x12
const CID_LENGTH = 36

/**
 * The CAR of `com.atproto.space.getRepo`: header roots [commit, index], the commit block, the
 * index block (DAG-CBOR map `{collection}/{rkey}` → CID), then one block per index entry in the
 * index's (canonical) key order (none with `excludeValues`). Blobs are not included.
 */
export async function encodeSpaceRepoCar(
  commit: SignedSpaceCommit,
  records: SpaceRecordBlock[],
  options: { excludeValues?: boolean } = {},
): Promise<Uint8Array> {
  const sorted = [...records].sort((a, b) => canonicalKeyOrder(path(a), path(b)))
  const index: Record<string, Cid> = {}
  for (const r of sorted) index[path(r)] = parseCid(r.cid)
  const commitBytes = encode(commit as unknown as LexMap)
  const indexBytes = encode(index)
  const commitCid = await cidForCbor(commitBytes)
  const indexCid = await cidForCbor(indexBytes)
  const parts: Uint8Array[] = [withLength(encode({ version: 1, roots: [commitCid, indexCid] }))]
  parts.push(section(commitCid.bytes, commitBytes), section(indexCid.bytes, indexBytes))
  // getRepo's excludeValues: the index still authenticates against the commit, without the records.
  if (!options.excludeValues) for (const r of sorted) parts.push(section(index[path(r)]!.bytes, r.bytes))
  return Buffer.concat(parts)
}

/**
 * Verifies a permissioned repo CAR in 0016's order: the commit (MAC and signature for `space`
 * and `author` under `didKey`), the index folded into a set hash against the commit's `hash`,
 * then each record block against its index CID. Throws `InvalidSpaceRepoError` saying what
 * failed; returns only a wholly verified repo.
 */
export async function verifySpaceRepoCar(
  car: Uint8Array,
  expected: { space: string; author: string; didKey: string },
): Promise<VerifiedSpaceRepo> {
  const reader = new SectionReader(car)
  const header = decodeMap(reader.header(), 'CAR header')
  const roots = header.roots
  if (header.version !== 1 || !Array.isArray(roots) || roots.length !== 2 || !roots.every((r) => isCid(r)))
    throw new InvalidSpaceRepoError('CAR header must be version 1 with two roots: the commit, then the index')
  const [commitRoot, indexRoot] = roots as [Cid, Cid]

  const commitBlock = reader.block()
  if (!commitBlock?.cid.equals(commitRoot))
    throw new InvalidSpaceRepoError('the commit block must come first')
  const commit = readCommit(decodeMap(commitBlock.bytes, 'commit'))
  const why = await checkSpaceCommit(commit, { ...expected, rev: commit.rev }, expected.didKey)
  if (why) throw new InvalidSpaceRepoError(why)

  const indexBlock = reader.block()
  if (!indexBlock?.cid.equals(indexRoot))
    throw new InvalidSpaceRepoError('the index block must follow the commit')
  const entries = readIndex(decodeMap(indexBlock.bytes, 'index'))
  const setHash = new SpaceSetHash()
  for (const e of entries) setHash.add(setHashElement(e.collection, e.rkey, e.cid.toString()))
  if (!Buffer.from(setHash.digest()).equals(commit.hash))
    throw new InvalidSpaceRepoError("the index's set hash is not the commit's hash")

  const records: SpaceRecordBlock[] = []
  for (const e of entries) {
    const block = reader.block()
    const at = `${e.collection}/${e.rkey}`
    if (!block) throw new InvalidSpaceRepoError(`the CAR ends before the record ${at}`)
    if (!block.cid.equals(e.cid))
      throw new InvalidSpaceRepoError(`expected ${e.cid} at ${at}, got ${block.cid}`)
    records.push({ collection: e.collection, rkey: e.rkey, cid: e.cid.toString(), bytes: block.bytes })
  }
  if (reader.block()) throw new InvalidSpaceRepoError('the CAR has more blocks than index entries')
  return { commit, records }
}

/** 0016's order of index keys: canonical DAG-CBOR map order (shorter first, then bytewise). */
export function canonicalKeyOrder(a: string, b: string): number {
  return a.length !== b.length ? a.length - b.length : a < b ? -1 : a > b ? 1 : 0
}

function path(r: { collection: string; rkey: string }): string {
  return `${r.collection}/${r.rkey}`
}

function readCommit(map: Record<string, unknown>): SignedSpaceCommit {
  const { ver, hash, ikm, sig, mac, rev } = map
  if (
    typeof ver !== 'number' ||
    typeof rev !== 'string' ||
    ![hash, ikm, sig, mac].every((b) => b instanceof Uint8Array)
  )
    throw new InvalidSpaceRepoError('the commit block is not a signedCommit (ver, hash, ikm, sig, mac, rev)')
  return { ver, rev, hash, ikm, sig, mac } as SignedSpaceCommit
}

function readIndex(map: Record<string, unknown>): { collection: string; rkey: string; cid: Cid }[] {
  const entries: { collection: string; rkey: string; cid: Cid }[] = []
  let previous: string | undefined
  for (const [key, cid] of Object.entries(map)) {
    const [collection, rkey, ...rest] = key.split('/')
    if (!collection || !rkey || rest.length > 0 || !isValidNsid(collection) || !isValidRecordKey(rkey))
      throw new InvalidSpaceRepoError(`index key ${JSON.stringify(key)} is not {collection}/{rkey}`)
    if (!isCid(cid) || cid.code !== DAG_CBOR || cid.multihash.code !== SHA2_256)
      throw new InvalidSpaceRepoError(`index entry ${key} is not a dag-cbor sha2-256 CID`)
    if (previous !== undefined && canonicalKeyOrder(previous, key) >= 0)
      throw new InvalidSpaceRepoError(`index keys out of canonical order at ${key}`)
    previous = key
    entries.push({ collection, rkey, cid })
  }
  return entries
}

function decodeMap(bytes: Uint8Array, what: string): Record<string, unknown> {
  let value: unknown
  try {
    value = decode(bytes)
  } catch (err) {
    throw new InvalidSpaceRepoError(`${what} is not DAG-CBOR: ${(err as Error).message}`, { cause: err })
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array)
    throw new InvalidSpaceRepoError(`${what} is not a map`)
  return value as Record<string, unknown>
}

function withLength(bytes: Uint8Array): Uint8Array {
  return Buffer.concat([lengthPrefix(bytes.length), bytes])
}

function section(cid: Uint8Array, bytes: Uint8Array): Uint8Array {
  return Buffer.concat([lengthPrefix(cid.length + bytes.length), cid, bytes])
}

function lengthPrefix(n: number): Uint8Array {
  const out = new Uint8Array(varint.encodingLength(n))
  varint.encodeTo(n, out, 0)
  return out
}

/**
 * Reads a CAR v1 held in memory: the length-prefixed header, then sections (length, a 36-byte
 * DASL CID, bytes), each block's bytes checked against its CID's sha2-256 digest.
 */
class SectionReader {
  private offset = 0

  constructor(private readonly car: Uint8Array) {}

  header(): Uint8Array {
    return this.take(this.length(), 'CAR header')
  }

  /** The next block, or `undefined` at the end of the CAR. */
  block(): { cid: Cid; bytes: Uint8Array } | undefined {
    if (this.offset === this.car.length) return undefined
    const sectionLength = this.length()
    if (sectionLength < CID_LENGTH) throw new InvalidSpaceRepoError('a CAR section is shorter than a CID')
    const section = this.take(sectionLength, 'CAR section')
    let cid: Cid
    try {
      cid = decodeCid(section.subarray(0, CID_LENGTH))
    } catch (err) {
      throw new InvalidSpaceRepoError(`a CAR section has no valid CID: ${(err as Error).message}`, {
        cause: err,
      })
    }
    if (cid.version !== 1 || cid.code !== DAG_CBOR || cid.multihash.code !== SHA2_256)
      throw new InvalidSpaceRepoError(`block ${cid} is not dag-cbor sha2-256`)
    const bytes = section.subarray(CID_LENGTH)
    if (!createHash('sha256').update(bytes).digest().equals(cid.multihash.digest))
      throw new InvalidSpaceRepoError(`block ${cid}: its bytes do not hash to its CID`)
    return { cid, bytes }
  }

  private length(): number {
    let value: number
    let read: number
    try {
      ;[value, read] = varint.decode(this.car, this.offset)
    } catch (err) {
      throw new InvalidSpaceRepoError('the CAR is cut inside a length', { cause: err })
    }
    this.offset += read
    return value
  }

  private take(length: number, what: string): Uint8Array {
    if (this.offset + length > this.car.length)
      throw new InvalidSpaceRepoError(`the CAR is cut inside a ${what}`)
    const out = this.car.subarray(this.offset, this.offset + length)
    this.offset += length
    return out
  }
}
