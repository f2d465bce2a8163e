import { type PermissionedDataUnit, readPermissionedData, type SpaceReaderOptions } from './space-reader.ts'
import type { PermissionedDataSink } from './space-sink.ts'

/**
 * Commits one verified unit of `did`'s permissioned data into the sink: a repo (replacing what an
 * earlier pull left) or a space the account is the authority of (configuration and
 * member list). The engine calls it for each unit `readPermissionedData` yields, in order.
 */
export async function importPermissionedUnit(
  sink: PermissionedDataSink,
  did: string,
  unit: PermissionedDataUnit,
): Promise<void> {
  switch (unit.kind) {
    case 'space-repo':
      return sink.importSpaceRepo(did, unit.space, { rev: unit.rev, hash: unit.hash, records: unit.records })
    case 'space-blob':
    case 'space-blob-missing':
      // A blob is stored by the reader itself, streamed and verified; a missing one is for the
      // engine to list for the user, as it lists missing public blobs.
      return
    case 'simplespace':
      return sink.importSimpleSpace(unit.state)
  }
}

/**
 * Reads all of an account's permissioned data and commits each unit as it verifies
 * (`readPermissionedData`, then `importPermissionedUnit`). Returns the space blobs the source
 * could not give, with why, for the user to review with the missing public blobs; throws the
 * reader's `ImportFailure` (a `RepoInvalid` names the space), nothing of the failing repo committed.
 */
export async function importPermissionedData(
  sink: PermissionedDataSink,
  options: SpaceReaderOptions,
): Promise<{ cid: string; why: string }[]> {
  const missing: { cid: string; why: string }[] = []
  for await (const unit of readPermissionedData(options)) {
    await importPermissionedUnit(sink, options.did, unit)
    if (unit.kind === 'space-blob-missing') missing.push({ cid: unit.cid, why: `${unit.space}: ${unit.why}` })
  }
  return missing
}
