/**
 * A repo from a source's `com.atproto.sync.getRepo`, through the same path as the v1 CAR frame
 * (`importStagedRepo`: staged block by block, verified, committed; a cut or a refusal discards
 * the staging). The CAR is never held whole in memory.
 */
import type { AccountSink } from './account-sink.ts'
import type { VerifiedRepo } from './repo-verifier.ts'
import type { SourceClient } from './source-client.ts'
import { importStagedRepo } from './staged-repo-import.ts'
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
  const { client, sink, did } = params
  const since = params.since !== undefined && sink.openRepoBlocks ? params.since : undefined
  const query = new URLSearchParams({ did, ...(since !== undefined && { since }) })
  let bytes = 0
  const repo = await importStagedRepo({
    sink,
    did,
    signingKey: params.signingKey,
    overHeld: since !== undefined,
    fill: (stageCar) =>
      fetchStreaming(
        (signal) => client.fetch(`/xrpc/com.atproto.sync.getRepo?${query}`, { signal }),
        'getRepo',
        params.stallTimeoutMs,
        (_res, body) =>
          stageCar(
            countBytes(body, (n) => {
              bytes += n
            }),
          ),
      ),
  })
  return { repo, bytes }
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
