/**
 * The `com.atproto.simplespace` space management of proposal 0016, which every PDS must serve:
 * spaces anchored on the owner's DID, a user policy, an app-access policy and a member list.
 */

export const SIMPLESPACE_DEFS = 'com.atproto.simplespace.defs'

/** Who may read the space (`policy`, an open union: a host refuses the variants it does not implement). */
export type SpacePolicy =
  | { $type: `${typeof SIMPLESPACE_DEFS}#publicPolicy` }
  | { $type: `${typeof SIMPLESPACE_DEFS}#memberListPolicy` }
  | { $type: `${typeof SIMPLESPACE_DEFS}#managingAppPolicy`; managingApp: string }

/** Which apps may read the space (`appAccess`, an open union). */
export type SpaceAppAccess =
  | { $type: `${typeof SIMPLESPACE_DEFS}#open` }
  | { $type: `${typeof SIMPLESPACE_DEFS}#allowList`; allowed: string[] }

/** A space's configuration as `getSpace` answers it. */
export interface SimpleSpace {
  uri: string
  policy: SpacePolicy
  appAccess: SpaceAppAccess
}

/** One page of member DIDs. */
export interface MemberPage {
  members: string[]
  cursor?: string
}

/**
 * The space-host role for simplespace spaces whose authority is an account of this PDS. The
 * SQLite test PDS implements it; a real PDS plugs in by implementing it. Ownership and scopes are
 * checked by the routes; the host stores and answers.
 */
export interface SimpleSpaceHost {
  /** Creates the space; `false` when it already exists. */
  createSpace(space: SimpleSpace): Promise<boolean>
  /** The space, or `undefined` when it does not exist (or was deleted). */
  getSpace(space: string): Promise<SimpleSpace | undefined>
  /** Replaces the fields given; `false` when the space does not exist. */
  updateSpace(space: string, patch: { policy?: SpacePolicy; appAccess?: SpaceAppAccess }): Promise<boolean>
  /** `false` when the space does not exist. Adding a member twice is no change. */
  addMember(space: string, did: string): Promise<boolean>
  /** `false` when the space does not exist. Removing a non-member is no change. */
  removeMember(space: string, did: string): Promise<boolean>
  /** Members in DID order after `cursor`; `undefined` when the space does not exist. */
  listMembers(space: string, options: { limit: number; cursor?: string }): Promise<MemberPage | undefined>
  /** Whether `did` is on the member list. */
  isMember(space: string, did: string): Promise<boolean>
}
