import { describe, expect, it } from 'vitest'
import { parseSpaceRef } from '../src/space-ref.ts'
import { parseSpaceScope, SPACE_MIGRATION_SCOPE, spaceScopeAllows } from '../src/space-scope.ts'

const ME = 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa'
const OTHER = 'did:plc:bbbbbbbbbbbbbbbbbbbbbbbb'
const mine = parseSpaceRef(`at://${ME}/space/com.example.bookmarks/self`)
const forum = parseSpaceRef(`at://${OTHER}/space/com.atmoboards.forum/default`)

describe('space: scopes (0016 "OAuth scopes")', () => {
  it('defaults: authority self, any skey, all record actions, no manage', () => {
    expect(parseSpaceScope('space:com.example.bookmarks')).toEqual({
      type: 'com.example.bookmarks',
      authority: 'self',
      skey: '*',
      actions: ['read', 'create', 'update', 'delete'],
      manage: [],
    })
    expect(parseSpaceScope('rpc:com.atproto.space.getRepo?aud=*')).toBeUndefined()
    expect(parseSpaceScope('space:x.y.z?action=write')).toBeUndefined()
  })

  it('self matches only the granting user; another authority must be named or *', () => {
    expect(spaceScopeAllows('space:com.example.bookmarks', ME, mine, { action: 'read_self' })).toBe(true)
    expect(spaceScopeAllows('space:com.atmoboards.forum', ME, forum, { action: 'read_self' })).toBe(false)
    expect(spaceScopeAllows('space:com.atmoboards.forum?authority=*', ME, forum, { action: 'read' })).toBe(
      true,
    )
    expect(
      spaceScopeAllows(`space:com.atmoboards.forum?authority=${OTHER}`, ME, forum, { action: 'read' }),
    ).toBe(true)
    expect(
      spaceScopeAllows('space:com.atmoboards.forum?authority=*&skey=other', ME, forum, { action: 'read' }),
    ).toBe(false)
  })

  it('read implies read_self, not the reverse; manage is never implied', () => {
    const readSelf = 'space:*?authority=*&action=read_self'
    expect(spaceScopeAllows('space:*?authority=*&action=read', ME, forum, { action: 'read_self' })).toBe(true)
    expect(spaceScopeAllows(readSelf, ME, forum, { action: 'read' })).toBe(false)
    expect(spaceScopeAllows('space:*?authority=*', ME, mine, { manage: 'update' })).toBe(false)
    expect(spaceScopeAllows('space:*?manage=update', ME, mine, { manage: 'update' })).toBe(true)
    expect(spaceScopeAllows('space:*?manage=update', ME, mine, { manage: 'create' })).toBe(false)
  })

  it("the migration scope reads the user's own repo in every space, and nothing more", () => {
    expect(spaceScopeAllows(SPACE_MIGRATION_SCOPE, ME, forum, { action: 'read_self' })).toBe(true)
    expect(spaceScopeAllows(SPACE_MIGRATION_SCOPE, ME, mine, { action: 'read_self' })).toBe(true)
    expect(spaceScopeAllows(SPACE_MIGRATION_SCOPE, ME, forum, { action: 'read' })).toBe(false)
    expect(spaceScopeAllows(SPACE_MIGRATION_SCOPE, ME, mine, { manage: 'update' })).toBe(false)
  })
})
