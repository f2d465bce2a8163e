import { createHash } from 'node:crypto'
import { type Cid, enumBlobRefs, getBlobCidString, isCid, type LexValue } from '@atproto/lex-data'
import { type Commit, cborToLex, mstUtil, verifyCommitSig } from '@atproto/repo'
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

/**
 * Verifies a staged repo without loading it into memory: the signed commit (DID and the DID
 * document's signing key), then an in-order walk of the MST from the commit's data root,
 * checking that every node and record block is present, keys are valid and strictly
 * increasing, and each node holds only keys of its own layer (one below its parent), which makes
 * the tree the one canonical MST of its keys. Blocks were hash-checked as they were staged, so
 * everything reached from the signed root is authentic.
 */
export async function verifyStagedRepo(params: {
  staging: RepoStaging
  root: Cid | { bytes: Uint8Array; toString(): string }
  did: string
  /** `did:key` of the DID document's `#atproto` verification method. */
  signingKey: string
}): Promise<VerifiedRepo> {
  const { staging } = params
  const commit = asMap(await load(staging, params.root.bytes, 'commit'), 'commit')
  if (commit.version !== 3)
    throw new InvalidRepoError(`commit version must be 3, got ${String(commit.version)}`)
  if (commit.did !== params.did)
    throw new InvalidRepoError(`commit is for ${String(commit.did)}, not ${params.did}`)
  if (typeof commit.rev !== 'string' || !isCid(commit.data) || !(commit.sig instanceof Uint8Array)) {
    throw new InvalidRepoError('commit lacks rev, data or sig')
  }
  if (commit.prev !== undefined && commit.prev !== null && !isCid(commit.prev)) {
    throw new InvalidRepoError('commit prev must be null or a CID')
  }
  // The signature covers every other field of the commit exactly as decoded.
  if (!(await verifyCommitSig(commit as unknown as Commit, params.signingKey))) {
    throw new InvalidRepoError(
      `commit signature does not verify with ${params.did}'s signing key ${params.signingKey}`,
    )
  }

  const out: VerifiedRepo = {
    commitCid: params.root.toString(),
    rev: commit.rev,
    records: 0,
    blobCids: new Set(),
  }
  let lastKey = ''
  /**
   * `layer` is the layer this node must hold keys of: unknown for the root (its first key
   * fixes it), then exactly one less for each subtree. An entry-less node is legal only as
   * the root of an empty repo or as an interior node whose left link leads down to keys.
   */
  const walk = async (cid: Cid, expected: number | undefined): Promise<void> => {
    const node = asMap(await load(staging, cid.bytes, 'MST node'), 'MST node')
    const entries = node.e
    if (!Array.isArray(entries)) throw new InvalidRepoError(`MST node ${cid} has no entry list`)
    if (node.l !== null && !isCid(node.l)) throw new InvalidRepoError(`MST node ${cid} has a bad left link`)
    if (entries.length === 0 && (expected === undefined ? node.l !== null : node.l === null)) {
      throw new InvalidRepoError(
        expected === undefined
          ? `MST root ${cid} has no entries but a subtree (not canonical)`
          : `MST node ${cid} is empty`,
      )
    }
    let layer = expected
    let prevKey = ''
    const entryKeys: string[] = []
    for (const raw of entries) {
      const entry = asMap(raw, 'MST entry')
      const { p, k, v, t } = entry
      if (typeof p !== 'number' || !(k instanceof Uint8Array) || !isCid(v) || (t !== null && !isCid(t))) {
        throw new InvalidRepoError(`MST node ${cid} has a malformed entry`)
      }
      if (p > prevKey.length)
        throw new InvalidRepoError(`MST node ${cid} has a prefix longer than the previous key`)
      const key = prevKey.slice(0, p) + Buffer.from(k).toString('latin1')
      if (!mstUtil.isValidMstKey(key))
        throw new InvalidRepoError(`invalid record path ${JSON.stringify(key)}`)
      const keyLayer = leadingZeros(key)
      layer ??= keyLayer
      if (keyLayer !== layer) {
        throw new InvalidRepoError(`MST node ${cid} holds ${key} of layer ${keyLayer} at layer ${layer}`)
      }
      entryKeys.push(key)
      prevKey = key
    }
    const hasChildren = isCid(node.l) || entries.some((e) => isCid((e as { t: unknown }).t))
    if (hasChildren && layer === 0) throw new InvalidRepoError(`MST node ${cid} at layer 0 has subtrees`)
    const childLayer = layer === undefined ? undefined : layer - 1
    if (isCid(node.l)) await walk(node.l, childLayer)
    for (const [i, raw] of entries.entries()) {
      const entry = raw as { v: Cid; t: Cid | null }
      const key = entryKeys[i] as string
      if (key <= lastKey) throw new InvalidRepoError(`MST keys out of order at ${key}`)
      lastKey = key
      await visitRecord(key, entry.v)
      if (entry.t) await walk(entry.t, childLayer)
    }
  }
  const visitRecord = async (key: string, cid: Cid) => {
    const record = await load(staging, cid.bytes, `record ${key}`)
    out.records++
    for (const ref of enumBlobRefs(record as LexValue, { allowLegacy: true, strict: false })) {
      out.blobCids.add('cid' in ref ? ref.cid : getBlobCidString(ref))
    }
  }
  await walk(commit.data, undefined)
  return out
}

async function load(staging: RepoStaging, cid: Uint8Array, what: string): Promise<unknown> {
  const bytes = await staging.get(cid)
  if (!bytes) throw new InvalidRepoError(`${what} block is missing from the CAR`)
  try {
    return cborToLex(bytes)
  } catch (err) {
    throw new InvalidRepoError(`${what} block is not valid DAG-CBOR`, { cause: err })
  }
}

function asMap(value: unknown, what: string): Record<string, unknown> {
  if (
    typeof value !== 'object' ||
    value === null ||
    Array.isArray(value) ||
    value instanceof Uint8Array ||
    isCid(value)
  ) {
    throw new InvalidRepoError(`${what} is not a map`)
  }
  return value as Record<string, unknown>
}

/** MST layer of a key: leading zero bits of its SHA-256, counted in pairs (fanout 4). */
function leadingZeros(key: string): number {
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
