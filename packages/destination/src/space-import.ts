import type { PermissionedDataUnit } from './space-reader.ts'
import type { PermissionedDataSink } from './space-sink.ts'

/**
 * Commits one verified unit of `did`'s permissioned data into the sink: a repo (replacing what an
 * earlier pull left), a blob, or a space the account is the authority of (configuration and
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
      return sink.importSpaceBlob(did, unit.space, unit.cid, unit.bytes)
    case 'simplespace':
      return sink.importSimpleSpace(unit.state)
  }
}
