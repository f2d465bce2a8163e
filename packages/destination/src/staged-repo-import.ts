/**
 * One repo CAR into the sink, the same for every reader (the v1 frame, sync getRepo): its blocks
 * staged (each hash-checked as it streams), the repo verified whole against the repository spec,
 * over the repo already committed here when the CAR may be a diff (`LayeredStaging`), then
 * committed. Invariant: the account's repo changes only by `commitRepo` of a verified repo; a
 * cut, a refusal or a failed check discards the staging and leaves the held repo as it was.
 */
import type { AccountSink, RepoStaging } from './account-sink.ts'
import { InvalidRepoError, verifiedCarBatches } from './car-blocks.ts'
import { ImportFailure } from './import-failure.ts'
import { IncompleteDiffError, LayeredStaging } from './layered-staging.ts'
import { type VerifiedRepo, verifyStagedRepo } from './repo-verifier.ts'

type CarRoot = Parameters<typeof verifyStagedRepo>[0]['root']

/**
 * Stages the CAR that `fill` hands to its `stageCar`, verifies and commits it. Throws
 * `ImportFailure('RepoInvalid')` for a repo that does not verify, `IncompleteDiffError` for a
 * diff that lacks a block the held repo lacks too (ask for the whole CAR), and whatever `fill`
 * throws (a cut, a bad tag).
 */
export async function importStagedRepo(params: {
  sink: AccountSink
  did: string
  /** The DID document's `#atproto` key (`did:key`): the commit must be signed with it. */
  signingKey: string
  /** The CAR may hold only what changed since the committed repo (extension repo-diff, `since`). */
  overHeld: boolean
  /** Reads the CAR through `stageCar`; when it resolves the CAR must be whole and authentic. */
  fill(stageCar: (car: AsyncIterable<Uint8Array>) => Promise<void>): Promise<unknown>
}): Promise<VerifiedRepo> {
  const { sink, did } = params
  const staging: RepoStaging = await sink.stageRepo(did)
  let layered: LayeredStaging | undefined
  try {
    if (params.overHeld && sink.openRepoBlocks) {
      layered = new LayeredStaging(staging, await sink.openRepoBlocks(did))
    }
    let root: CarRoot | undefined
    await params.fill(async (car) => {
      for await (const batch of verifiedCarBatches(car, { onRoot: (r) => (root = r) }))
        await staging.put(batch)
    })
    if (!root) throw new InvalidRepoError('repo CAR has no root')
    const repo = await verifyStagedRepo({
      staging: layered ?? staging,
      root,
      did,
      signingKey: params.signingKey,
    })
    // Now the staging holds every block the new commit reaches: committed like a full CAR.
    await layered?.finish()
    await sink.commitRepo(did, staging, { commitCid: repo.commitCid, rev: repo.rev })
    return repo
  } catch (err) {
    // The import's own error is what the user must see; a failing cleanup (a full disk) is the sink's to retry.
    await (layered ?? staging).discard().catch(() => {})
    if (err instanceof InvalidRepoError && layered && layered.missing > 0) {
      throw new IncompleteDiffError(`the repo diff does not verify over what is held: ${err.message}`, {
        cause: err,
      })
    }
    if (err instanceof InvalidRepoError) throw new ImportFailure('RepoInvalid', err.message, { cause: err })
    throw err
  }
}
