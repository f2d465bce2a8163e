/**
 * The reader for an account's permissioned data (proposal 0016), over the `com.atproto.space.*`
 * and `com.atproto.simplespace.*` methods of the source (any dialect: the methods are 0016's, not
 * ours). Discover every space the account holds a repo in (`listSpaces`), read each repo
 * (`getRepo`) and verify it in 0016's order (commit MAC and signature with the account's
 * `#atproto` key, the index's set hash against the commit, each record block against its CID),
 * then its blobs (`listBlobs` and the verified records' blob refs, each `getBlob` streamed into the
 * account's blob store, hashed against its CID, committed only if it matches), and for each space whose authority is the account, its configuration (`getSpace`) and
 * member list (`listMembers`).
 *
 * Invariant: a unit is yielded only once wholly verified (a blob: once stored verified), so a
 * consumer that commits each unit as it comes never commits a byte of a repo that fails; the
 * failure (`ImportFailure`, `RepoInvalid` naming the space) ends the read. A blob the source cannot
 * give is a `space-blob-missing` unit, for the user to see, as for public blobs.
 */
import { decode } from '@atproto/lex-cbor'
import { enumBlobRefs, getBlobCid } from '@atproto/lex-data'
import { jsonToLex } from '@atproto/lex-json'
import {
  InvalidSpaceRepoError,
  parseSpaceRef,
  type SpaceRecordBlock,
  type SpaceRef,
  spaceLexicons,
  verifySpaceRepoCar,
} from '@pds-transfer/core'
import type { AccountSink } from './account-sink.ts'
import { DEFAULT_LIMITS, type EngineLimits } from './engine-limits.ts'
import { ImportFailure } from './import-failure.ts'
import type { FailureReason } from './inbound-transfer.ts'
import type { SourceClient } from './source-client.ts'
import { SourceError } from './source-client.ts'
import type { SimpleSpaceState } from './space-sink.ts'
import { type BlobFetchOutcome, fetchBlob } from './sync-blob-fetch.ts'
import {
  exhaustedFailure,
  fetchStreaming,
  readJson,
  TransientSourceError,
  withRetries,
} from './sync-retry.ts'

/** A verified piece of an account's permissioned data. */
export type PermissionedDataUnit =
  | {
      kind: 'space-repo'
      space: string
      rev: string
      /** The digest of the set hash the records verified against. */
      hash: Uint8Array
      records: SpaceRecordBlock[]
    }
  /** A blob the repo references, now held by the account here (stored verified, or held before). */
  | { kind: 'space-blob'; space: string; cid: string }
  /** A blob the repo references that the source could not give, and why. */
  | { kind: 'space-blob-missing'; space: string; cid: string; why: string }
  | { kind: 'simplespace'; state: SimpleSpaceState }

/** Options of {@link readPermissionedData}. */
export interface SpaceReaderOptions {
  /** The source, authorized with a grant covering `read_self` in every space (`SPACE_MIGRATION_SCOPE`). */
  client: SourceClient
  did: string
  /** `did:key` of the account's `#atproto` key as its DID document has it now (before any PLC change). */
  signingKey: string
  /**
   * The account's blob store here: each blob is streamed into it, hashed, and committed only if
   * it is its CID (as the public blobs are); one already held is not fetched again.
   */
  blobs: Pick<AccountSink, 'startBlob' | 'hasBlob'>
  /** Largest permissioned repo CAR read (64 MiB): a repo is verified whole before it is yielded. */
  maxRepoBytes?: number
  /** `retry`, `stallTimeoutMs`, `maxBlobSize` apply (engine defaults). */
  limits?: Partial<EngineLimits>
}

const DEFAULT_MAX_REPO_BYTES = 64 * 1024 * 1024
const MAX_JSON_BYTES = 4 * 1024 * 1024

/**
 * Reads and verifies every permissioned repo, blob and owned space of `did`, unit by unit. Ends
 * with `ImportFailure` naming the reason (`RepoInvalid`, `BlobInvalid`, `SourceRefused`, …), a
 * transient failure that outlasted its retries included.
 */
export async function* readPermissionedData(
  options: SpaceReaderOptions,
): AsyncGenerator<PermissionedDataUnit> {
  try {
    yield* readAll(options)
  } catch (err) {
    throw err instanceof TransientSourceError ? exhaustedFailure(err) : err
  }
}

async function* readAll(options: SpaceReaderOptions): AsyncGenerator<PermissionedDataUnit> {
  const { did } = options
  const limits: EngineLimits = {
    ...DEFAULT_LIMITS,
    ...options.limits,
    retry: { ...DEFAULT_LIMITS.retry, ...options.limits?.retry },
  }
  const call = new SpaceCalls(options.client, limits)
  const seen = new Set<string>()
  for await (const space of call.pages('com.atproto.space.listSpaces', {}, 'spaces', 100)) {
    const uri = (space as { uri: string }).uri
    // A space listed twice (pages that overlap) is read once.
    if (seen.has(uri)) continue
    seen.add(uri)
    const ref = listedSpace(uri)
    const repo = await readRepo(call, uri, options, options.maxRepoBytes ?? DEFAULT_MAX_REPO_BYTES)
    yield { kind: 'space-repo', space: uri, ...repo }
    for (const cid of await blobsOf(call, uri, did, repo.records)) {
      const outcome = (await options.blobs.hasBlob(did, cid))
        ? { stored: 0 }
        : await call.blob(uri, did, cid, options.blobs)
      yield 'missing' in outcome
        ? { kind: 'space-blob-missing', space: uri, cid, why: outcome.missing }
        : { kind: 'space-blob', space: uri, cid }
    }
    if (ref.authority === did) yield { kind: 'simplespace', state: await readSimpleSpace(call, uri) }
  }
}

/** A listed space-ref, or `SourceRefused` naming it (the lexicon leaves its format to us: spec). */
function listedSpace(uri: string): SpaceRef {
  try {
    return parseSpaceRef(uri)
  } catch (err) {
    throw new ImportFailure(
      'SourceRefused',
      `listSpaces named ${JSON.stringify(uri)}: ${(err as Error).message}`,
      {
        cause: err,
      },
    )
  }
}

async function readRepo(
  call: SpaceCalls,
  space: string,
  options: SpaceReaderOptions,
  maxBytes: number,
): Promise<{ rev: string; hash: Uint8Array; records: SpaceRecordBlock[] }> {
  const car = await call.bytes(
    'com.atproto.space.getRepo',
    { space, repo: options.did },
    maxBytes,
    'RepoInvalid',
  )
  try {
    const { commit, records } = await verifySpaceRepoCar(car, {
      space,
      author: options.did,
      didKey: options.signingKey,
    })
    return { rev: commit.rev, hash: commit.hash, records }
  } catch (err) {
    if (!(err instanceof InvalidSpaceRepoError)) throw err
    throw new ImportFailure(
      'RepoInvalid',
      `the permissioned repo in ${space} does not verify: ${err.message}`,
      {
        cause: err,
      },
    )
  }
}

/** listBlobs's CIDs and the verified records' blob refs, once each, in that order. */
async function blobsOf(
  call: SpaceCalls,
  space: string,
  did: string,
  records: SpaceRecordBlock[],
): Promise<string[]> {
  const cids = new Set<string>()
  for await (const cid of call.pages('com.atproto.space.listBlobs', { space, repo: did }, 'cids', 1000))
    cids.add(String(cid))
  // A blob a record uses that the source's listing left out is still the user's data.
  for (const r of records)
    for (const ref of enumBlobRefs(decode(r.bytes))) cids.add(getBlobCid(ref).toString())
  return [...cids]
}

async function readSimpleSpace(call: SpaceCalls, space: string): Promise<SimpleSpaceState> {
  const config = (await call.json('com.atproto.simplespace.getSpace', { space })) as Omit<
    SimpleSpaceState,
    'members'
  >
  if (config.uri !== space)
    throw new ImportFailure('SourceRefused', `getSpace for ${space} answered for ${String(config.uri)}`)
  const members: string[] = []
  for await (const m of call.pages('com.atproto.simplespace.listMembers', { space }, 'members', 1000))
    members.push((m as { did: string }).did)
  return { uri: space, policy: config.policy, appAccess: config.appAccess, members }
}

/** The source's 0016 methods: JSON answers validated by the vendored lexicons, bytes bounded. */
class SpaceCalls {
  constructor(
    private readonly client: SourceClient,
    private readonly limits: EngineLimits,
  ) {}

  /** Every item of a paginated query, following `cursor` until a page comes without one. */
  async *pages(
    nsid: string,
    params: Record<string, string>,
    key: string,
    limit: number,
  ): AsyncGenerator<unknown> {
    const seen = new Set<string>()
    let cursor: string | undefined
    do {
      const page = (await this.json(nsid, {
        ...params,
        limit: String(limit),
        ...(cursor && { cursor }),
      })) as Record<string, unknown>
      yield* page[key] as unknown[]
      cursor = page.cursor as string | undefined
      // A source that repeats a cursor would have the read loop for ever.
      if (cursor !== undefined && seen.has(cursor))
        throw new ImportFailure('SourceRefused', `${nsid} repeated the cursor ${cursor}`)
      if (cursor !== undefined) seen.add(cursor)
    } while (cursor !== undefined)
  }

  async json(nsid: string, params: Record<string, string>): Promise<unknown> {
    const value = await this.fetch(nsid, params, (_res, body) =>
      readJson(body, { maxBytes: MAX_JSON_BYTES, what: nsid, reason: 'SourceRefused' }),
    )
    try {
      // getSpace answers policy unions with $type; jsonToLex keeps them as they are.
      return spaceLexicons.assertValidXrpcOutput(nsid, jsonToLex(value as never))
    } catch (err) {
      throw new ImportFailure('SourceRefused', `${nsid}: ${(err as Error).message}`, { cause: err })
    }
  }

  async bytes(
    nsid: string,
    params: Record<string, string>,
    maxBytes: number,
    reason: FailureReason,
  ): Promise<Uint8Array> {
    return this.fetch(nsid, params, async (_res, body) => {
      const chunks: Uint8Array[] = []
      let size = 0
      for await (const chunk of body) {
        size += chunk.length
        if (size > maxBytes) throw new ImportFailure(reason, `${nsid}: answer over ${maxBytes} bytes`)
        chunks.push(chunk)
      }
      return new Uint8Array(Buffer.concat(chunks))
    })
  }

  /** A blob into `sink`, hashed while streamed (`fetchBlob`, the public blobs' path, on 0016's getBlob). */
  blob(
    space: string,
    did: string,
    cid: string,
    sink: Pick<AccountSink, 'startBlob'>,
  ): Promise<BlobFetchOutcome> {
    const path = `/xrpc/com.atproto.space.getBlob?${new URLSearchParams({ space, repo: did, cid })}`
    return withRetries(this.limits.retry, async () => {
      try {
        return await fetchBlob({
          client: this.client,
          sink,
          did,
          cid,
          path,
          maxBlobSize: this.limits.maxBlobSize,
          stallTimeoutMs: this.limits.stallTimeoutMs,
        })
      } catch (err) {
        if (err instanceof SourceError)
          throw new ImportFailure('SourceRefused', `com.atproto.space.getBlob: ${err.message}`, {
            cause: err,
          })
        throw err
      }
    })
  }

  private fetch<T>(
    nsid: string,
    params: Record<string, string>,
    consume: (res: Response, body: AsyncIterable<Uint8Array>) => Promise<T>,
  ): Promise<T> {
    const path = `/xrpc/${nsid}?${new URLSearchParams(params)}`
    return withRetries(this.limits.retry, async () => {
      try {
        return await fetchStreaming(
          (signal) => this.client.fetch(path, { signal }),
          nsid,
          this.limits.stallTimeoutMs,
          consume,
        )
      } catch (err) {
        if (err instanceof SourceError)
          throw new ImportFailure('SourceRefused', `${nsid}: ${err.message}`, { cause: err })
        throw err
      }
    })
  }
}
