import type { SpaceRef } from './space-ref.ts'

/**
 * The `space:` OAuth scope of proposal 0016 ("OAuth scopes"):
 * `space:<type>[?authority=<did|self|*>][&skey=..][&collection=..][&action=..][&manage=..]`.
 */
export interface SpaceScope {
  /** A space-type NSID or `*`. */
  type: string
  /** A DID, `self` (the granting user's own DID: the default) or `*`. */
  authority: string
  /** A space key or `*` (the default). */
  skey: string
  /** Record actions; `read`, `create`, `update`, `delete` when the scope names none. */
  actions: SpaceAction[]
  /** Operations on the space itself; none when the scope names none. */
  manage: SpaceManageOp[]
}

export type SpaceAction = 'read_self' | 'read' | 'create' | 'update' | 'delete'
export type SpaceManageOp = 'create' | 'update' | 'delete'

const ACTIONS: readonly string[] = ['read_self', 'read', 'create', 'update', 'delete']
const MANAGE: readonly string[] = ['create', 'update', 'delete']

/** What a migration asks the source for: every space, under any authority, the user's own repos only. */
export const SPACE_MIGRATION_SCOPE = 'space:*?authority=*&action=read_self'

/** Parses one `space:` scope; `undefined` for any other scope or a malformed one (ignored, as unknown scopes are). */
export function parseSpaceScope(scope: string): SpaceScope | undefined {
  if (!scope.startsWith('space:')) return undefined
  const [type = '', query = ''] = scope.slice('space:'.length).split('?', 2)
  if (type === '') return undefined
  const params = new URLSearchParams(query)
  const actions = params.getAll('action')
  const manage = params.getAll('manage')
  if (!actions.every((a) => ACTIONS.includes(a)) || !manage.every((m) => MANAGE.includes(m))) return undefined
  return {
    type,
    authority: params.get('authority') ?? 'self',
    skey: params.get('skey') ?? '*',
    actions: (actions.length > 0 ? actions : ['read', 'create', 'update', 'delete']) as SpaceAction[],
    manage: manage as SpaceManageOp[],
  }
}

/** What a request needs: record access to one repo, or a management operation on the space. */
export type SpaceNeed = { action: 'read_self' | 'read' } | { manage: SpaceManageOp }

/**
 * Whether any of `scopes` (space-separated scope strings or a list) lets `userDid` do `need` in
 * `space`. `read` satisfies `read_self` (0016, "Matching"); `self` matches only the user's DID.
 */
export function spaceScopeAllows(
  scopes: string | readonly string[],
  userDid: string,
  space: SpaceRef,
  need: SpaceNeed,
): boolean {
  const list = typeof scopes === 'string' ? scopes.split(' ') : scopes
  return list.some((s) => {
    const scope = parseSpaceScope(s)
    if (!scope || !covers(scope, userDid, space)) return false
    if ('manage' in need) return scope.manage.includes(need.manage)
    return (
      scope.actions.includes(need.action) || (need.action === 'read_self' && scope.actions.includes('read'))
    )
  })
}

function covers(scope: SpaceScope, userDid: string, space: SpaceRef): boolean {
  const authority = scope.authority === 'self' ? userDid : scope.authority
  return (
    (scope.type === '*' || scope.type === space.type) &&
    (authority === '*' || authority === space.authority) &&
    (scope.skey === '*' || scope.skey === space.skey)
  )
}
