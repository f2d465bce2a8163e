/**
 * A repo in the archive is a full CAR followed by the diffs of later runs (each the blocks
 * `getRepo?since=` returned, verified over the repo before it). The repo at a run is the union
 * of the blocks of its chain, walked from that run's commit: every block is addressed by its
 * hash, so a union cannot change what the commit reaches.
 */
import { join } from 'node:path'
import type { AccountArchive, ArchiveState, RepoEntry } from '@pds-transfer/archive'
import { OBJECT_TYPE } from '@pds-transfer/archive'
import { RepoStagingFile, verifiedCarBatches } from '@pds-transfer/destination'

/** The repo objects the latest run's repo is made of, oldest (the full CAR) first. */
export function repoChain(state: ArchiveState): RepoEntry[] {
  const chain: RepoEntry[] = []
  for (let i = state.manifests.length - 1; i >= 0; i--) {
    const repo = (state.manifests[i] as ArchiveState['manifests'][number]).repo
    if (chain[0]?.object.key === repo.object.key) continue // the head did not move that run
    chain.unshift(repo)
    if (repo.kind === 'full') break
  }
  return chain
}

/** The blocks of every object of `chain`, decrypted and hash-checked, in a block file in `dir`. */
export async function loadChain(
  archive: AccountArchive,
  chain: RepoEntry[],
  dir: string,
  name: string,
): Promise<RepoStagingFile> {
  const file = new RepoStagingFile(join(dir, `${name}.sqlite`))
  try {
    for (const entry of chain) {
      for await (const batch of verifiedCarBatches(archive.read(entry.object, OBJECT_TYPE.repo), {
        onRoot: () => {},
      }))
        await file.put(batch)
    }
    return file
  } catch (err) {
    await file.discard()
    throw err
  }
}
