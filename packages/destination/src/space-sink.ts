import type { SpaceRecordBlock } from '@pds-transfer/core'

/** A simplespace space whose authority is the moving account, with its member list. */
export interface SimpleSpaceState {
  uri: string
  /** `com.atproto.simplespace.defs` policy union value, as getSpace answered it. */
  policy: { $type: string } & Record<string, unknown>
  /** `com.atproto.simplespace.defs` appAccess union value, as getSpace answered it. */
  appAccess: { $type: string } & Record<string, unknown>
  /** Member DIDs, in the order listMembers gave them. */
  members: string[]
}

/**
 * Where the destination keeps an account's permissioned data (proposal 0016): the receiving
 * PDS's repo host and space host. Blobs go to the account's blob store (`AccountSink.startBlob`);
 * which repo may serve which blob follows from the blob refs of its records. Each call is all-or-nothing; the reader calls it only with data
 * that verified. The SQLite test PDS implements it; a real PDS plugs in by implementing it.
 */
export interface PermissionedDataSink {
  /**
   * Makes `did`'s repo in `space` exactly `records` at `rev` (replacing what an earlier, cut pull
   * left), its set hash recomputed from them. Throws, storing nothing, when the records do not
   * hash to `hash` (the digest of the commit they verified against).
   */
  importSpaceRepo(
    did: string,
    space: string,
    repo: { rev: string; hash: Uint8Array; records: SpaceRecordBlock[] },
  ): Promise<void>
  /** Re-hosts a space the account is the authority of: its configuration and member list, replaced whole. */
  importSimpleSpace(state: SimpleSpaceState): Promise<void>
}
