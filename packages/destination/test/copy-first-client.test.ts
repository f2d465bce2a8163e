import { describe, expect, it } from 'vitest'
import { copyFirstClient } from '../src/copy-first-client.ts'
import type { SourceClient } from '../src/source-client.ts'

/** A server answering each path with `answer`, recording what it was asked. */
function server(url: string, answer: (path: string) => Response, asked: string[]): SourceClient {
  return {
    url,
    fetch: async (path) => {
      asked.push(path)
      return answer(path)
    },
  }
}

describe('copyFirstClient', () => {
  const blob = (cid: string) => `/xrpc/com.atproto.sync.getBlob?did=did:plc:a&cid=${cid}`

  it('reads the repo, its head and the blob list from the copy, the rest from the PDS', async () => {
    const fromCopy: string[] = []
    const fromPds: string[] = []
    const copy = server('https://backup.example', () => Response.json({ from: 'copy' }), fromCopy)
    const pds = server('https://pds.example', () => Response.json({ from: 'pds' }), fromPds)
    const client = copyFirstClient(copy, pds)
    expect(client.url).toBe('https://pds.example')
    for (const path of [
      '/xrpc/com.atproto.sync.getRepo?did=did:plc:a',
      '/xrpc/com.atproto.sync.getLatestCommit?did=did:plc:a',
      '/xrpc/com.atproto.sync.listBlobs?did=did:plc:a&limit=1000',
      blob('bafkreihave'),
    ])
      expect(await (await client.fetch(path)).json()).toEqual({ from: 'copy' })
    for (const path of [
      '/xrpc/app.bsky.actor.getPreferences',
      '/xrpc/com.atproto.server.getSession',
      '/xrpc/com.atproto.identity.requestPlcOperationSignature',
      '/xrpc/com.atproto.server.describeServer',
    ])
      expect(await (await client.fetch(path)).json()).toEqual({ from: 'pds' })
    expect(fromPds).toHaveLength(4)
  })

  it('fetches a blob the copy lacks from the PDS, and passes on any other refusal of the copy', async () => {
    const fromPds: string[] = []
    const copy = server(
      'https://backup.example',
      (path) =>
        path.includes('missing404')
          ? Response.json({ error: 'BlobNotFound', message: 'no' }, { status: 404 })
          : path.includes('missing400')
            ? Response.json({ error: 'InvalidRequest', message: 'Blob not found' }, { status: 400 })
            : Response.json({ error: 'AuthRequired', message: 'bad token' }, { status: 401 }),
      [],
    )
    const pds = server('https://pds.example', () => new Response('image bytes'), fromPds)
    const client = copyFirstClient(copy, pds)
    expect(await (await client.fetch(blob('missing404'))).text()).toBe('image bytes')
    expect(await (await client.fetch(blob('missing400'))).text()).toBe('image bytes')
    // A copy that refuses us (a wrong token) is not papered over by the PDS: the pull says so.
    expect((await client.fetch(blob('refused'))).status).toBe(401)
    expect(fromPds).toEqual([blob('missing404'), blob('missing400')])
  })
})
