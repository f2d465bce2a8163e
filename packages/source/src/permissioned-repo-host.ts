import type { CommitSigner, SpaceRecordBlock } from '@pds-transfer/core'

/** One page of space-refs. */
export interface SpacePage {
  spaces: string[]
  cursor?: string
}

/** One page of blob CIDs. */
export interface SpaceBlobPage {
  cids: string[]
  cursor?: string
}

/** A permissioned repo as its host holds it: its rev and the digest of its set hash. */
export interface SpaceRepoHead {
  rev: string
  /** sha256 of the 2048-byte LtHash state (what a commit carries as `hash`). */
  hash: Uint8Array
}

/**
 * The repo-host role of proposal 0016 over a PDS's storage: what the `com.atproto.space.*` read
 * methods need (listSpaces, getRepo, getLatestCommit, listBlobs, getBlob). The SQLite test PDS
 * implements it; a real PDS that hosts permissioned repos plugs in by implementing it.
 */
export interface PermissionedRepoHost {
  /** Spaces (space-refs) in which `did` holds a repo here, in space-ref order after `cursor`. */
  listSpaces(
    did: string,
    options: { type?: string; authority?: string; limit: number; cursor?: string },
  ): Promise<SpacePage>
  /** The repo's head, or `undefined` when `did` holds no repo in `space` here. */
  repoHead(space: string, did: string): Promise<SpaceRepoHead | undefined>
  /** The head and every record, read as one consistent state; `undefined` when there is no repo. */
  readRepo(space: string, did: string): Promise<(SpaceRepoHead & { records: SpaceRecordBlock[] }) | undefined>
  /** CIDs of the blobs the repo's records reference, in CID order after `cursor`; `undefined` with no repo. */
  listBlobs(
    space: string,
    did: string,
    options: { limit: number; cursor?: string },
  ): Promise<SpaceBlobPage | undefined>
  /** A blob a record of the repo references: its bytes streamed; `undefined` when not referenced or not held. */
  openBlob(
    space: string,
    did: string,
    cid: string,
  ): Promise<{ size: number; mimeType?: string; bytes: AsyncIterable<Uint8Array> } | undefined>
  /** Signs with the account's `#atproto` signing key (0016 commits are signed per reader). */
  signer(did: string): CommitSigner | undefined
}
