/**
 * A repo from a source's `com.atproto.sync.getRepo`, through the same path as the v1 CAR frame:
 * `verifiedCarBatches` (each block hash-checked as it streams) into the sink's staging, then
 * `verifyStagedRepo` (signed commit, MST, records), then `commitRepo`. Invariant: the account's
 * repo changes only by `commitRepo` of a fully received and verified CAR; a cut or a refusal
 * discards the staging. The CAR is never held whole in memory.
 */
import type { AccountSink, RepoStaging } from './account-sink.ts'
import { InvalidRepoError, verifiedCarBatches } from './car-blocks.ts'
import { ImportFailure } from './import-failure.ts'
import { IncompleteDiffError, LayeredStaging } from './layered-staging.ts'
import { type VerifiedRepo, verifyStagedRepo } from './repo-verifier.ts'
import type { SourceClient } from './source-client.ts'
import { fetchStreaming } from './sync-retry.ts'

/**
 * Pulls, verifies and commits the repo of `did`. Returns what was verified, with the CAR's
 * size. Throws `ImportFailure('RepoInvalid')` for a CAR that does not verify and
 * `TransientSourceError` for a cut, a stall, a 5xx or 429 (worth another attempt).
 */
export async function importRepoFromSync(params: {
  client: SourceClient
  sink: AccountSink
  did: string
  /** The DID document's `#atproto` key (`did:key`): the commit must be signed with it. */
  signingKey: string
  stallTimeoutMs: number
  /**
   * A rev whose repo is committed here: ask only for the blocks written after it
   * (`getRepo?since=`) and verify them over the held repo (`AccountSink.openRepoBlocks`).
   * Throws `IncompleteDiffError` when the diff lacks a block the held repo lacks too.
   */
  since?: string
}): Promise<{ repo: VerifiedRepo; bytes: number }> {
  const { client, sink, did, signingKey } = params
  const staging: RepoStaging = await sink.stageRepo(did)
  let layered: LayeredStaging | undefined
  try {
    const since = params.since !== undefined && sink.openRepoBlocks ? params.since : undefined
    if (since !== undefined && sink.openRepoBlocks) {
      layered = new LayeredStaging(staging, await sink.openRepoBlocks(did))
    }
    const query = new URLSearchParams({ did, ...(since !== undefined && { since }) })
    let root: Parameters<typeof verifyStagedRepo>[0]['root'] | undefined
    let bytes = 0
    await fetchStreaming(
      (signal) => client.fetch(`/xrpc/com.atproto.sync.getRepo?${query}`, { signal }),
      'getRepo',
      params.stallTimeoutMs,
      async (_res, body) => {
        const counted = countBytes(body, (n) => {
          bytes += n
        })
        for await (const batch of verifiedCarBatches(counted, { onRoot: (r) => (root = r) }))
          await staging.put(batch)
      },
    )
    if (!root) throw new InvalidRepoError('repo CAR has no root')
    const repo = await verifyStagedRepo({ staging: layered ?? staging, root, did, signingKey })
    await layered?.finish()
    await sink.commitRepo(did, staging, { commitCid: repo.commitCid, rev: repo.rev })
    return { repo, bytes }
  } catch (err) {
    // The pull's own error is what the user must see; a failing cleanup is the sink's to retry.
    await (layered ?? staging).discard().catch(() => {})
    if (err instanceof InvalidRepoError && layered && layered.missing > 0) {
      throw new IncompleteDiffError(`getRepo since ${params.since} does not verify over what is held`, {
        cause: err,
      })
    }
    if (err instanceof InvalidRepoError) throw new ImportFailure('RepoInvalid', err.message, { cause: err })
    throw err
  }
}

async function* countBytes(
  body: AsyncIterable<Uint8Array>,
  add: (n: number) => void,
): AsyncGenerator<Uint8Array> {
  for await (const chunk of body) {
    add(chunk.length)
    yield chunk
  }
}
