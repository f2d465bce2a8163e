import type { PermissionedDataUnit } from './space-reader.ts'
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
