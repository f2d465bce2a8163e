import { parseLexiconDoc } from '@atproto/lexicon'
import { describe, expect, it } from 'vitest'
import {
  readSpaceLexiconJson,
  readSpaceLexicons,
  SPACE_REF_FORMAT,
  spaceLexicons,
} from '../src/space-lexicons.ts'
import { formatSpaceRef, parseSpaceRef } from '../src/space-ref.ts'

const SPACE = 'at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/space/com.example.forum/default'
const DID = 'did:plc:bbbbbbbbbbbbbbbbbbbbbbbb'

describe('vendored 0016 lexicons (lexicons/com/atproto/{space,simplespace})', () => {
  it('are every method 0016 and this work rely on, each at the path its id names', () => {
    const ids = readSpaceLexiconJson().map((d) => d.id)
    for (const { id, json } of readSpaceLexiconJson()) expect((json as { id: string }).id).toBe(id)
    for (const m of [
      'listSpaces',
      'getRepo',
      'listBlobs',
      'getBlob',
      'getLatestCommit',
      'listRepoOps',
      'defs',
    ])
      expect(ids).toContain(`com.atproto.space.${m}`)
    for (const m of [
      'createSpace',
      'getSpace',
      'updateSpace',
      'addMember',
      'removeMember',
      'listMembers',
      'defs',
    ])
      expect(ids).toContain(`com.atproto.simplespace.${m}`)
  })

  it('parse with @atproto/lexicon once the space-ref format is dropped; only that format is dropped', () => {
    const parsed = readSpaceLexicons()
    const raw = readSpaceLexiconJson()
    expect(parsed).toHaveLength(raw.length)
    const strip = (s: string) => s.replaceAll(`,"format":"${SPACE_REF_FORMAT}"`, '')
    for (const [i, doc] of parsed.entries())
      expect(JSON.stringify(doc)).toBe(strip(JSON.stringify(raw[i]?.json)))
  })

  it('the installed @atproto/lexicon does not know space-ref (why the format is dropped: spec/permissioned-data.md)', () => {
    const getRepo = readSpaceLexiconJson().find((d) => d.id === 'com.atproto.space.getRepo')?.json
    expect(JSON.stringify(getRepo)).toContain(`"format":"${SPACE_REF_FORMAT}"`)
    expect(() => parseLexiconDoc(getRepo)).toThrow()
  })

  it('validate params, inputs and outputs of the methods a move uses', () => {
    expect(
      spaceLexicons.assertValidXrpcParams('com.atproto.space.getRepo', { space: SPACE, repo: DID }),
    ).toEqual({
      space: SPACE,
      repo: DID,
      excludeValues: false,
    })
    expect(() => spaceLexicons.assertValidXrpcParams('com.atproto.space.getRepo', { space: SPACE })).toThrow(
      /repo/,
    )
    expect(() =>
      spaceLexicons.assertValidXrpcParams('com.atproto.space.listBlobs', { space: SPACE, repo: 'alice' }),
    ).toThrow(/repo/)
    spaceLexicons.assertValidXrpcOutput('com.atproto.space.listSpaces', { spaces: [{ uri: SPACE }] })
    spaceLexicons.assertValidXrpcInput('com.atproto.simplespace.createSpace', {
      type: 'com.example.forum',
      skey: 'default',
      policy: { $type: 'com.atproto.simplespace.defs#memberListPolicy' },
      appAccess: {
        $type: 'com.atproto.simplespace.defs#allowList',
        allowed: ['https://app.example/client.json'],
      },
    })
    expect(() =>
      spaceLexicons.assertValidXrpcInput('com.atproto.simplespace.createSpace', {
        type: 'com.example.forum',
        policy: { $type: 'com.atproto.simplespace.defs#memberListPolicy' },
        appAccess: { $type: 'com.atproto.simplespace.defs#allowList' },
      }),
    ).toThrow(/allowed/)
  })
})

describe('lexicons against the proposal text (spec/permissioned-data.md, "Errata")', () => {
  it('managingApp is a field of managingAppPolicy, not of the space configuration as 0016 tabulates it', () => {
    const input = (policy: unknown, extra: object = {}) => ({
      type: 'com.example.forum',
      policy,
      appAccess: { $type: 'com.atproto.simplespace.defs#open' },
      ...extra,
    })
    const nsid = 'com.atproto.simplespace.createSpace'
    expect(() =>
      spaceLexicons.assertValidXrpcInput(
        nsid,
        input({ $type: 'com.atproto.simplespace.defs#managingAppPolicy' }),
      ),
    ).toThrow(/managingApp/)
    spaceLexicons.assertValidXrpcInput(
      nsid,
      input({
        $type: 'com.atproto.simplespace.defs#managingAppPolicy',
        managingApp: 'did:web:app.example#forum',
      }),
    )
    const getSpace = spaceLexicons.getDefOrThrow('com.atproto.simplespace.getSpace') as unknown as {
      output: { schema: { properties: Record<string, unknown> } }
    }
    expect(Object.keys(getSpace.output.schema.properties).sort()).toEqual(['appAccess', 'policy', 'uri'])
  })
})

describe('space-ref', () => {
  it('round-trips (authority, type, skey)', () => {
    expect(parseSpaceRef(SPACE)).toEqual({
      authority: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa',
      type: 'com.example.forum',
      skey: 'default',
    })
    expect(formatSpaceRef(parseSpaceRef(SPACE))).toBe(SPACE)
  })

  it.each([
    ['a handle as authority', 'at://alice.test/space/com.example.forum/default'],
    ['a record URI', `${SPACE}/${DID}/com.example.post/3k2a`],
    ['no space marker', 'at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/com.example.forum/default'],
    ['a type that is not an NSID', 'at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/space/forum/default'],
    ['an skey that is not a record key', 'at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/space/com.example.forum/..'],
    [
      'an skey over 512 bytes',
      `at://did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/space/com.example.forum/${'k'.repeat(513)}`,
    ],
  ])('refuses %s as InvalidRequest', (_what, value) => {
    expect(() => parseSpaceRef(value)).toThrow(expect.objectContaining({ error: 'InvalidRequest' }))
  })
})
