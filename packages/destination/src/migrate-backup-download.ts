/**
 * The checklist's "download a backup first": the whole public account as one zip, streamed from
 * the current server's sync endpoints through this one, in the plain-export layout of
 * spec/archive-format.md (`repo.car`, `blobs/<cid>`, plus `README.txt` saying what is inside and
 * how to restore it). Invariant: every blob is hashed against its CID as it streams and a
 * mismatch aborts the download (a cut file, never a wrong one); a blob the server cannot serve
 * is left out and named in README.txt.
 */
import { createHash } from 'node:crypto'
import { PassThrough, Readable, Transform } from 'node:stream'
import { finished } from 'node:stream/promises'
import type { ReadableStream as WebReadableStream } from 'node:stream/web'
import { CID } from 'multiformats/cid'
import yazl from 'yazl'

export interface AccountZip {
  /** The zip's bytes; it errors (and should be cut off) when the server sends something wrong. */
  stream: NodeJS.ReadableStream
  /** A file name people recognise: `<handle or did>-<yyyy-mm-dd>.zip`. */
  fileName: string
}

/** Streams `did`'s repo and blobs from `source` (its PDS) as a zip. */
export function accountZip(params: {
  source: string
  did: string
  handle?: string
  /** Who made the download (this server's host), for README.txt. */
  madeBy: string
  fetch?: typeof fetch
  now?: Date
}): AccountZip {
  const doFetch = params.fetch ?? fetch
  const base = params.source.replace(/\/+$/, '')
  const now = params.now ?? new Date()
  const zip = new yazl.ZipFile()
  const output = new PassThrough()
  zip.outputStream.on('error', (err) => output.destroy(err)).pipe(output)
  const sync = (nsid: string, query: Record<string, string>) =>
    doFetch(`${base}/xrpc/com.atproto.sync.${nsid}?${new URLSearchParams({ did: params.did, ...query })}`, {
      signal: AbortSignal.timeout(120_000),
    })

  void (async () => {
    const repo = await sync('getRepo', {})
    if (!repo.ok || !repo.body) throw new Error(`getRepo answered HTTP ${repo.status}`)
    await addEntry(zip, 'repo.car', fromWeb(repo.body), true)
    let cursor: string | undefined
    let blobs = 0
    const missing: string[] = []
    do {
      const page = await sync('listBlobs', { limit: '1000', ...(cursor && { cursor }) })
      if (!page.ok) throw new Error(`listBlobs answered HTTP ${page.status}`)
      const body = (await page.json()) as { cids?: unknown; cursor?: unknown }
      const cids = Array.isArray(body.cids) ? body.cids.filter((c): c is string => typeof c === 'string') : []
      for (const cid of cids) {
        const res = await sync('getBlob', { cid })
        if (!res.ok || !res.body) {
          await res.body?.cancel()
          missing.push(cid)
          continue
        }
        await addEntry(zip, `blobs/${cid}`, fromWeb(res.body).pipe(checkedAgainst(cid)), false)
        blobs++
      }
      cursor = cids.length > 0 && typeof body.cursor === 'string' ? body.cursor : undefined
    } while (cursor)
    zip.addBuffer(Buffer.from(readme({ ...params, now, blobs, missing })), 'README.txt')
    zip.end()
  })().catch((err: unknown) => output.destroy(err instanceof Error ? err : new Error(String(err))))

  const name = (params.handle ?? params.did).replace(/[^A-Za-z0-9._-]+/g, '_')
  return { stream: output, fileName: `${name}-${now.toISOString().slice(0, 10)}.zip` }
}

/** Adds one entry and waits until the zip has read all of it (entries go one at a time). */
async function addEntry(zip: yazl.ZipFile, name: string, body: Readable, compress: boolean): Promise<void> {
  zip.addReadStream(body, name, { compress })
  await finished(body)
}

function fromWeb(body: ReadableStream<Uint8Array>): Readable {
  return Readable.fromWeb(body as WebReadableStream<Uint8Array>)
}

/** Passes the bytes on, and fails the stream at its end unless they hash to `cid`. */
function checkedAgainst(cid: string): Transform {
  const digest = CID.parse(cid).multihash.digest
  const hash = createHash('sha256')
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk)
      done(null, chunk)
    },
    flush(done) {
      done(
        Buffer.from(digest).equals(hash.digest())
          ? null
          : new Error(`blob ${cid}: the bytes received do not hash to its CID`),
      )
    },
  })
}

function readme(p: {
  did: string
  handle?: string
  source: string
  madeBy: string
  now: Date
  blobs: number
  missing: string[]
}): string {
  return `Backup of ${p.handle ?? p.did} (${p.did})
made ${p.now.toISOString()} by ${p.madeBy}, from your server ${p.source}, before moving.

repo.car       your repository: every post, like, follow, list, profile and other record,
               signed by your identity (a CAR file, as com.atproto.sync.getRepo gives it)
blobs/<cid>    your images and videos, ${p.blobs} file(s), each named by its content ID
               (checked against that ID as it was downloaded)
${
  p.missing.length > 0
    ? `
NOT INCLUDED: ${p.missing.length} file(s) your server could not send:
${p.missing.map((c) => `  ${c}`).join('\n')}
`
    : ''
}
Not in this file: your settings (preferences), email address and private settings (they move
with the account), passwords (never copied).

To restore: if your server is gone or has taken your account, go to /recover on a server that
runs pds-transfer (this one, ${p.madeBy}, does) and choose "a file I kept"; upload this zip
as it is, with your rotation key file: every post and image is checked, and your key moves your
identity there. Or import repo.car into an account on any server yourself
(com.atproto.repo.importRepo, e.g. "goat repo import repo.car"), then upload each file in blobs/
(com.atproto.repo.uploadBlob, e.g. "goat blob upload"). The layout is "Plain export" in
pds-transfer's spec/archive-format.md, the same as "pds-backup export" writes.
`
}
