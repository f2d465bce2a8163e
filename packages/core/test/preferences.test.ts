import { describe, expect, it } from 'vitest'
import { WireError } from '../src/errors.ts'
import { encodePreferences, parsePreferences, validatePreferences } from '../src/preferences.ts'

/** What a Bluesky account's `app.bsky.actor.getPreferences` typically returns. */
const PREFS = [
  {
    $type: 'app.bsky.actor.defs#savedFeedsPrefV2',
    items: [
      { id: '3l6ovcmm2vd2j', type: 'timeline', value: 'following', pinned: true },
      {
        id: '3l6ovcmm2vd2k',
        type: 'feed',
        value: 'at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.generator/whats-hot',
        pinned: false,
      },
    ],
  },
  { $type: 'app.bsky.actor.defs#adultContentPref', enabled: false },
  { $type: 'app.bsky.actor.defs#contentLabelPref', label: 'graphic-media', visibility: 'warn' },
  {
    $type: 'app.bsky.actor.defs#contentLabelPref',
    labelerDid: 'did:plc:ar7c4by46qjdydhdevvrndac',
    label: 'spam',
    visibility: 'hide',
  },
  {
    $type: 'app.bsky.actor.defs#mutedWordsPref',
    items: [
      { id: '3kzuqgc4rwq2a', value: 'spoilers', targets: ['content', 'tag'], actorTarget: 'all' },
      { value: 'election', targets: ['tag'], expiresAt: '2026-11-30T00:00:00.000Z' },
    ],
  },
]

const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value))

/** Asserts `fn` throws `InvalidPreferences` with a message containing each of `parts`. */
function expectInvalid(fn: () => unknown, ...parts: string[]): void {
  let thrown: unknown
  try {
    fn()
  } catch (err) {
    thrown = err
  }
  expect(thrown).toBeInstanceOf(WireError)
  expect((thrown as WireError).reason).toBe('InvalidPreferences')
  for (const part of parts) expect((thrown as WireError).message).toContain(part)
}

describe('preferences', () => {
  it('accepts a realistic preferences array unchanged', () => {
    expect(parsePreferences(encode(PREFS))).toEqual(PREFS)
    expect(validatePreferences(structuredClone(PREFS))).toEqual(PREFS)
  })

  it('accepts an empty array', () => {
    expect(parsePreferences(encode([]))).toEqual([])
  })

  it('does not fill in lexicon defaults', () => {
    // mutedWord.actorTarget defaults to 'all'; the frame must carry exactly what the user had.
    const [item] = parsePreferences(encode([PREFS[4]])) as [{ items: Record<string, unknown>[] }]
    expect(item.items[1]).not.toHaveProperty('actorTarget')
  })

  it('keeps items of unknown $type (forward compatibility)', () => {
    const prefs = [
      { $type: 'app.bsky.actor.defs#someFuturePref', anything: [1, { x: true }] },
      { $type: 'com.example.client#layoutPref', columns: 3 },
    ]
    expect(parsePreferences(encode(prefs))).toEqual(prefs)
  })

  it('round-trips through encodePreferences', () => {
    expect(parsePreferences(encodePreferences(PREFS))).toEqual(PREFS)
  })

  it('rejects invalid JSON and invalid UTF-8', () => {
    expectInvalid(() => parsePreferences(new TextEncoder().encode('[{"$type": ')), 'JSON')
    expectInvalid(() => parsePreferences(Uint8Array.of(0x5b, 0xff, 0x5d)), 'UTF-8')
  })

  it.each([
    ['an object', { preferences: PREFS }],
    ['a string', 'prefs'],
    ['null', null],
  ])('rejects %s instead of an array', (_name, value) => {
    expectInvalid(() => parsePreferences(encode(value)), 'array')
    expectInvalid(() => validatePreferences(value), 'array')
  })

  it.each<[string, unknown[], string, string]>([
    ['without $type', [PREFS[1], { enabled: true }], 'item 1', '$type'],
    ['with a numeric $type', [{ $type: 7 }], 'item 0', '$type'],
    ['that is not an object', [PREFS[1], 'adultContentPref'], 'item 1', 'object'],
    ['that is an array', [[PREFS[1]]], 'item 0', 'object'],
    [
      'adultContentPref.enabled = "yes"',
      [PREFS[0], { $type: 'app.bsky.actor.defs#adultContentPref', enabled: 'yes' }],
      'item 1',
      'enabled',
    ],
    [
      'contentLabelPref without label',
      [{ $type: 'app.bsky.actor.defs#contentLabelPref', visibility: 'warn' }],
      'item 0',
      'label',
    ],
    [
      'mutedWordsPref with a non-array targets',
      [{ $type: 'app.bsky.actor.defs#mutedWordsPref', items: [{ value: 'x', targets: 'tag' }] }],
      'item 0',
      'targets',
    ],
    [
      'savedFeedsPrefV2 with pinned as a string',
      [
        {
          $type: 'app.bsky.actor.defs#savedFeedsPrefV2',
          items: [{ id: 'a', type: 'feed', value: 'v', pinned: 'no' }],
        },
      ],
      'item 0',
      'pinned',
    ],
  ])('rejects an item %s', (_name, prefs, item, field) => {
    expectInvalid(() => parsePreferences(encode(prefs)), item, field)
    expectInvalid(() => encodePreferences(prefs), item, field)
  })
})
