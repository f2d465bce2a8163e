import { createHash } from 'node:crypto'
import { decode, encode } from '@atproto/lex-cbor'
import {
  type Cid,
  decodeCid,
  enumBlobRefs,
  getBlobCidString,
  isCid,
  isPlainObject,
  type LexValue,
} from '@atproto/lex-data'
import { type Commit, mstUtil, verifyCommitSig } from '@atproto/repo'
import { ensureValidNsid, ensureValidRecordKey, ensureValidTid } from '@atproto/syntax'
import type { RepoStaging } from './account-sink.ts'
import { InvalidRepoError } from './car-blocks.ts'

/** What a verified repo tells the importer. */
export interface VerifiedRepo {
  commitCid: string
  rev: string
  records: number
  /** Blob CIDs referenced by committed records: exactly what must arrive or be reconciled. */
  blobCids: Set<string>
}

/** A v3 commit has exactly these fields (repository spec, "Commit Objects"). */
const COMMIT_FIELDS = ['did', 'version', 'data', 'rev', 'prev', 'sig']
/** An MST node and its entries have exactly these (repository spec, "MST Structure"). */
const NODE_FIELDS = ['l', 'e']
const ENTRY_FIELDS = ['p', 'k', 'v', 't']

/**
 * Verifies a staged repo against the repository spec without loading it into memory: the
 * signed commit (its v3 shape, the DID and the DID document's signing key), then the MST from
 * the commit's data root (see `verifyMst`), then each record: its path a valid NSID and record
 * key, its block a CBOR map of the atproto data model. Every block reached is DRISL: it
 * re-encodes to exactly its own bytes. Blocks were hash-checked as they were staged, so
 * everything reached from the signed root is authentic; blocks not reached are ignored.
 * spec/repo-verification.md lists each rule with the spec sentence behind it.
 */
export async function verifyStagedRepo(params: {
  staging: RepoStaging
  root: Cid | { bytes: Uint8Array; toString(): string }
  did: string
  /** `did:key` of the DID document's `#atproto` verification method. */
  signingKey: string
}): Promise<VerifiedRepo> {
  const { staging } = params
  const root = decodeCid(params.root.bytes)
  if (!isCid(root, { flavor: 'cbor' })) {
    throw new InvalidRepoError(`the CAR's first root ${root} is not a dag-cbor sha2-256 CID, so not a commit`)
  }
  const commit = asMap(await loadDrisl(staging, root, 'commit'), 'commit')
  exactFields(commit, COMMIT_FIELDS, 'commit')
  if (commit.version !== 3)
    throw new InvalidRepoError(`commit version must be 3, got ${String(commit.version)}`)
  if (commit.did !== params.did)
    throw new InvalidRepoError(`commit is for ${String(commit.did)}, not ${params.did}`)
  const rev = commit.rev
  if (typeof rev !== 'string') throw new InvalidRepoError('commit rev must be a string')
  syntax(() => ensureValidTid(rev), `commit rev ${JSON.stringify(rev)} is not a TID`)
  if (!isCid(commit.data, { flavor: 'cbor' }))
    throw new InvalidRepoError('commit data must be a dag-cbor sha2-256 CID')
  if (commit.prev !== null && !isCid(commit.prev, { flavor: 'cbor' })) {
    throw new InvalidRepoError('commit prev must be null or a dag-cbor sha2-256 CID')
  }
  if (!(commit.sig instanceof Uint8Array)) throw new InvalidRepoError('commit sig must be bytes')
  // The signature covers every other field of the commit exactly as decoded.
  if (!(await verifyCommitSig(commit as unknown as Commit, params.signingKey))) {
    throw new InvalidRepoError(
      `commit signature does not verify with ${params.did}'s signing key ${params.signingKey}`,
    )
  }

  const out: VerifiedRepo = { commitCid: root.toString(), rev, records: 0, blobCids: new Set() }
  await verifyMst(staging, commit.data, async (key, cid) => {
    const [collection = '', rkey, ...more] = key.split('/')
    if (rkey === undefined || more.length > 0)
      throw new InvalidRepoError(`record path ${JSON.stringify(key)} is not <collection>/<record-key>`)
    syntax(() => ensureValidNsid(collection), `record path ${JSON.stringify(key)}: collection is not an NSID`)
    syntax(() => ensureValidRecordKey(rkey), `record path ${JSON.stringify(key)}: invalid record key`)
    const record = await loadDrisl(staging, cid, `record ${key}`)
    if (!isPlainObject(record)) throw new InvalidRepoError(`record ${key} is not a CBOR map`)
    out.records++
    for (const ref of enumBlobRefs(record as LexValue, { allowLegacy: true, strict: false })) {
      out.blobCids.add('cid' in ref ? ref.cid : getBlobCidString(ref))
    }
  })
  return out
}

/**
 * Walks the MST from `root` in key order, calling `onLeaf` for each key and its value CID.
 * Checks what makes the tree the one canonical MST of its keys: nodes of exactly the spec's
 * fields, links to nodes dag-cbor sha2-256, keys strictly increasing from the empty string (so
 * none is empty) and prefix-compressed as much as possible, each node holding only keys of its own layer (one
 * below its parent), no empty node but an empty repo's root or an interior one leading down to
 * keys. Key syntax is the caller's: the structure is the same for any byte keys.
 */
export async function verifyMst(
  staging: RepoStaging,
  root: Cid,
  onLeaf: (key: string, value: Cid) => Promise<void>,
): Promise<void> {
  let lastKey = ''
  /**
   * `expected` is the layer this node must hold keys of: unknown for the root (its first key
   * fixes it), then exactly one less for each subtree.
   */
  const walk = async (cid: Cid, expected: number | undefined): Promise<void> => {
    const node = asMap(await loadDrisl(staging, cid, `MST node ${cid}`), `MST node ${cid}`)
    exactFields(node, NODE_FIELDS, `MST node ${cid}`)
    const entries = node.e
    if (!Array.isArray(entries)) throw new InvalidRepoError(`MST node ${cid} has no entry list`)
    if (node.l !== null && !isCid(node.l, { flavor: 'cbor' }))
      throw new InvalidRepoError(`MST node ${cid} has a bad left link`)
    if (entries.length === 0 && (expected === undefined ? node.l !== null : node.l === null)) {
      throw new InvalidRepoError(
        expected === undefined
          ? `MST root ${cid} has no entries but a subtree (not canonical)`
          : `MST node ${cid} is empty`,
      )
    }
    let layer = expected
    let prevKey = ''
    const leaves: { key: string; v: Cid; t: Cid | null }[] = []
    for (const raw of entries) {
      const entry = asMap(raw, `MST node ${cid} entry`)
      exactFields(entry, ENTRY_FIELDS, `MST node ${cid} entry`)
      const { p, k, v, t } = entry
      if (typeof p !== 'number' || !(k instanceof Uint8Array) || !isCid(v)) {
        throw new InvalidRepoError(`MST node ${cid} has a malformed entry`)
      }
      if (t !== null && !isCid(t, { flavor: 'cbor' }))
        throw new InvalidRepoError(`MST node ${cid} has a bad subtree link`)
      // Keys are ASCII today; latin1 keeps one character per byte, so `p` counts bytes.
      const key = prevKey.slice(0, p) + Buffer.from(k).toString('latin1')
      const shared = mstUtil.countPrefixLen(prevKey, key)
      if (p !== shared) {
        throw new InvalidRepoError(
          `MST node ${cid}: ${JSON.stringify(key)} has prefix length ${p} but shares ${shared} bytes with the previous key (prefix compression is mandatory)`,
        )
      }
      const keyLayer = mstLayer(key)
      layer ??= keyLayer
      if (keyLayer !== layer) {
        throw new InvalidRepoError(`MST node ${cid} holds ${key} of layer ${keyLayer} at layer ${layer}`)
      }
      leaves.push({ key, v, t })
      prevKey = key
    }
    const hasChildren = node.l !== null || leaves.some((e) => e.t !== null)
    if (hasChildren && layer === 0) throw new InvalidRepoError(`MST node ${cid} at layer 0 has subtrees`)
    const childLayer = layer === undefined ? undefined : layer - 1
    if (node.l !== null) await walk(node.l as Cid, childLayer)
    for (const { key, v, t } of leaves) {
      if (key <= lastKey) throw new InvalidRepoError(`MST keys out of order at ${key}`)
      lastKey = key
      await onLeaf(key, v)
      if (t) await walk(t, childLayer)
    }
  }
  await walk(root, undefined)
}

/** MST layer of a key: leading zero bits of its SHA-256, counted in pairs (fanout 4). */
export function mstLayer(key: string): number {
  const hash = createHash('sha256').update(key, 'latin1').digest()
  let zeros = 0
  for (const byte of hash) {
    if (byte === 0) {
      zeros += 4
      continue
    }
    if (byte < 4) zeros += 3
    else if (byte < 16) zeros += 2
    else if (byte < 64) zeros += 1
    break
  }
  return zeros
}

/**
 * A block decoded as DRISL: `@atproto/lex-cbor` decodes it (definite lengths, minimal integers,
 * tag 42 only, no duplicate keys) and must re-encode it to exactly its bytes, which rules out
 * unsorted keys and floats, even integral ones, that the decoder lets through.
 */
async function loadDrisl(staging: RepoStaging, cid: Cid, what: string): Promise<unknown> {
  const bytes = await staging.get(cid.bytes)
  if (!bytes) throw new InvalidRepoError(`${what} block is missing from the CAR`)
  let value: LexValue
  try {
    value = decode(bytes)
  } catch (err) {
    throw new InvalidRepoError(`${what} block is not valid DRISL CBOR: ${(err as Error).message}`, {
      cause: err,
    })
  }
  let canonical: Uint8Array
  try {
    canonical = encode(value)
  } catch (err) {
    throw new InvalidRepoError(`${what} is outside the atproto data model: ${(err as Error).message}`, {
      cause: err,
    })
  }
  if (!Buffer.from(canonical.buffer, canonical.byteOffset, canonical.length).equals(bytes)) {
    throw new InvalidRepoError(`${what} is not canonical DRISL CBOR (it does not re-encode to its own bytes)`)
  }
  return value
}

function asMap(value: unknown, what: string): Record<string, unknown> {
  if (!isPlainObject(value)) throw new InvalidRepoError(`${what} is not a map`)
  return value as Record<string, unknown>
}

function exactFields(value: Record<string, unknown>, fields: string[], what: string): void {
  const missing = fields.filter((f) => !(f in value))
  const extra = Object.keys(value).filter((f) => !fields.includes(f))
  if (missing.length === 0 && extra.length === 0) return
  const problems = [
    ...(missing.length > 0 ? [`lacks ${missing.join(', ')}`] : []),
    ...(extra.length > 0 ? [`has unknown ${extra.join(', ')}`] : []),
  ]
  throw new InvalidRepoError(
    `${what} ${problems.join(' and ')} (fields must be exactly ${fields.join(', ')})`,
  )
}

/** Runs an `@atproto/syntax` check, its error becoming the repo's. */
function syntax(check: () => void, what: string): void {
  try {
    check()
  } catch (err) {
    throw new InvalidRepoError(`${what}: ${(err as Error).message}`, { cause: err })
  }
}
