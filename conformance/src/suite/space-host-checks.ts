import { randomBytes } from 'node:crypto'
import { jsonToLex } from '@atproto/lex-json'
import { checkSpaceCommit, parseSpaceRef, type SignedSpaceCommit, spaceLexicons } from '@pds-transfer/core'
import { type AccountSink, readPermissionedData, type SourceClient } from '@pds-transfer/destination'
import { type Check, CheckFailed, expectThat, skip } from './check.ts'
import { anonymousClient, describe, xrpc } from './xrpc-call.ts'

/**
 * A PDS serving proposal 0016's repo-host reads for one account: `client` is signed in as `did`
 * with a grant covering `read_self` in every space (`SPACE_MIGRATION_SCOPE`); `signingKey` is the
 * account's `#atproto` key (did:key) as its DID document names it.
 */
export interface SpaceHostTarget {
  url: string
  client: SourceClient
  did: string
  signingKey: string
}

const SPEC = 'permissioned-data.md'

/** Checks of the `com.atproto.space.*` reads a move relies on (spec/permissioned-data.md). */
export const spaceHostChecks: readonly Check<SpaceHostTarget>[] = [
  {
    id: 'space.auth.required',
    section: '0016 XRPC API',
    level: 'MUST',
    title: 'listSpaces and getRepo refuse a request without credentials',
    async run(t) {
      const anon = anonymousClient(t.url)
      const list = await xrpc(anon, 'com.atproto.space.listSpaces', { query: {} })
      const space = `at://${t.did}/space/com.example.conformance/self`
      const repo = await xrpc(anon, 'com.atproto.space.getRepo', { query: { space, repo: t.did } })
      expectThat(
        list.status === 401 && repo.status === 401,
        `listSpaces ${describe(list)}; getRepo ${describe(repo)}`,
      )
      return `listSpaces ${describe(list)}; getRepo ${describe(repo)}`
    },
  },
  {
    id: 'space.listSpaces.valid',
    section: '0016 XRPC API',
    level: 'MUST',
    title: 'listSpaces answers its lexicon, every entry a space-ref, pages ending',
    async run(t) {
      const spaces = await listAll(t.client)
      return `${spaces.length} spaces: ${spaces.slice(0, 3).join(', ')}${spaces.length > 3 ? ', …' : ''}`
    },
  },
  {
    id: 'space.getLatestCommit.verifies',
    section: '0016 Commit signature',
    level: 'MUST',
    title: "getLatestCommit is a signedCommit whose MAC and signature verify with the account's key",
    async run(t) {
      const [space] = await listAll(t.client)
      if (!space) skip('the account holds no permissioned repo')
      const answer = await xrpc(t.client, 'com.atproto.space.getLatestCommit', {
        query: { space, repo: t.did },
      })
      expectThat(answer.status === 200 && answer.json, `getLatestCommit: ${describe(answer)}`)
      const { commit } = spaceLexicons.assertValidXrpcOutput(
        'com.atproto.space.getLatestCommit',
        jsonToLex(answer.json as never),
      ) as { commit: SignedSpaceCommit }
      const why = await checkSpaceCommit(commit, { space, author: t.did, rev: commit.rev }, t.signingKey)
      expectThat(why === undefined, `${space}: ${why}`)
      return `${space}: rev ${commit.rev} verifies`
    },
  },
  {
    id: 'space.getRepo.unknown',
    section: '0016 XRPC API',
    level: 'MUST',
    title: 'getRepo for a space the account holds no repo in answers RepoNotFound (or SpaceNotFound)',
    async run(t) {
      const space = `at://${t.did}/space/com.example.conformance/${randomBytes(8).toString('hex')}`
      const answer = await xrpc(t.client, 'com.atproto.space.getRepo', { query: { space, repo: t.did } })
      const name = answer.json?.error
      expectThat(
        answer.status >= 400 && answer.status < 500 && (name === 'RepoNotFound' || name === 'SpaceNotFound'),
        `expected RepoNotFound, got ${describe(answer)}`,
      )
      return describe(answer)
    },
  },
  {
    id: 'space.read.all-verify',
    section: SPEC,
    level: 'MUST',
    title: 'every permissioned repo, its blobs and each owned space read and verify as a move reads them',
    async run(t) {
      const counts = { repos: 0, records: 0, blobs: 0, missing: 0, owned: 0 }
      try {
        for await (const unit of readPermissionedData({
          client: t.client,
          did: t.did,
          signingKey: t.signingKey,
          blobs: discardingBlobSink(),
          limits: { retry: { attempts: 2, baseDelayMs: 200 } },
        })) {
          if (unit.kind === 'space-repo') {
            counts.repos++
            counts.records += unit.records.length
          } else if (unit.kind === 'space-blob') counts.blobs++
          else if (unit.kind === 'space-blob-missing') counts.missing++
          else counts.owned++
        }
      } catch (err) {
        throw new CheckFailed(err instanceof Error ? err.message : String(err))
      }
      expectThat(counts.missing === 0, `${counts.missing} referenced blobs could not be had`)
      return `${counts.repos} repos, ${counts.records} records, ${counts.blobs} blobs hashed, ${counts.owned} owned spaces`
    },
  },
]

async function listAll(client: SourceClient): Promise<string[]> {
  const spaces: string[] = []
  let cursor: string | undefined
  for (let page = 0; page < 1000; page++) {
    const answer = await xrpc(client, 'com.atproto.space.listSpaces', {
      query: { limit: '100', ...(cursor && { cursor }) },
    })
    expectThat(answer.status === 200 && answer.json, `listSpaces: ${describe(answer)}`)
    try {
      spaceLexicons.assertValidXrpcOutput('com.atproto.space.listSpaces', answer.json)
      for (const { uri } of answer.json.spaces as { uri: string }[]) spaces.push(checkedSpaceRef(uri))
    } catch (err) {
      throw new CheckFailed(`listSpaces: ${(err as Error).message}`)
    }
    cursor = answer.json.cursor as string | undefined
    if (cursor === undefined) return spaces
  }
  throw new CheckFailed('listSpaces did not end after 1000 pages')
}

/** `uri` if it is a space-ref; throws naming what is wrong (the lexicon format our lexicon library lacks). */
function checkedSpaceRef(uri: string): string {
  parseSpaceRef(uri)
  return uri
}

/** A blob sink that keeps nothing: fetchBlob still hashes every byte against the CID. */
function discardingBlobSink(): Pick<AccountSink, 'startBlob' | 'hasBlob'> {
  return {
    hasBlob: async () => false,
    startBlob: async () => ({ write: async () => {}, commit: async () => {}, abort: async () => {} }),
  }
}
