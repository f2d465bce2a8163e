import type { Cid, LexValue } from '@atproto/lex-data'
import { cborToLex } from '@atproto/repo'
import type { RepoStaging } from './account-sink.ts'

/** One record of a staged repo, in key order. */
export interface StagedRecord {
  collection: string
  rkey: string
  cid: Cid
  record: LexValue
}

/**
 * The records of a staged repo that `verifyStagedRepo` has accepted, walked in key order one
 * MST node at a time: what a sink needs to index an imported repo without loading it whole.
 */
export async function* stagedRecords(staging: RepoStaging, commitCid: Cid): AsyncGenerator<StagedRecord> {
  const commit = (await load(staging, commitCid)) as { data: Cid }
  yield* walk(staging, commit.data)
}

async function* walk(staging: RepoStaging, nodeCid: Cid): AsyncGenerator<StagedRecord> {
  const node = (await load(staging, nodeCid)) as {
    l: Cid | null
    e: { p: number; k: Uint8Array; v: Cid; t: Cid | null }[]
  }
  if (node.l) yield* walk(staging, node.l)
  let key = ''
  for (const entry of node.e) {
    key = key.slice(0, entry.p) + Buffer.from(entry.k).toString('latin1')
    const [collection = '', rkey = ''] = key.split('/')
    yield { collection, rkey, cid: entry.v, record: await load(staging, entry.v) }
    if (entry.t) yield* walk(staging, entry.t)
  }
}

async function load(staging: RepoStaging, cid: Cid): Promise<LexValue> {
  const bytes = await staging.get(cid.bytes)
  if (!bytes) throw new Error(`block ${cid} is not staged`)
  return cborToLex(bytes)
}
