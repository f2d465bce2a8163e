/**
 * A plain export of one account (a folder or a zip: the repo as a `.car`, blobs as files named
 * by their CID, `prefs.json`, `account.json`) served as the sync endpoints a restore reads, so
 * "bring your own backup" goes through the same reader, verifier and staging as a copy served
 * over HTTP: nothing here is trusted, every block and blob is checked by the pull against its
 * CID and the commit against the identity's key. Answers are built from the files on request
 * and streamed; nothing is unpacked.
 */
import { createHash } from 'node:crypto'
import { basename } from 'node:path'
import { Readable } from 'node:stream'
import { pathToFileURL } from 'node:url'
import { decode } from '@atproto/lex-cbor'
import { isBlobCid } from '@pds-transfer/core'
import { CID } from 'multiformats/cid'
import { verifiedCarBatches } from './car-blocks.ts'
import { type ExportFiles, ExportUnreadable, openExportFiles } from './export-files.ts'
import type { SourceClient } from './source-client.ts'

/** Where in the export each part of the account is. */
export interface ExportLayout {
  /** The repo CAR's entry name. */
  car: string
  /** Blob CID → entry name. */
  blobs: Map<string, string>
  preferences?: string
  account?: string
}

/** The repo's head as the export's CAR holds it. */
export interface ExportHead {
  did: string
  rev: string
  cid: string
}

/** A `SourceClient` over an export, with what it found there; `close` releases the files. */
export interface ExportSourceClient extends SourceClient {
  readonly layout: ExportLayout
  readonly head: ExportHead
  close(): Promise<void>
}

/** Largest `prefs.json` / `account.json` read (they are small documents). */
const MAX_JSON_FILE = 16 * 1024 * 1024

/**
 * Opens the export at `path` and checks it holds `did`'s repo (the CAR's commit says so). Throws
 * `ExportUnreadable` saying what is wrong with it and what to do. `url` names the copy in the
 * transfer's record (default: the path's `file:` URL).
 */
export async function exportSourceClient(
  path: string,
  did: string,
  url: string = pathToFileURL(path).href,
): Promise<ExportSourceClient> {
  const files = await openExportFiles(path)
  try {
    const layout = exportLayout(files)
    const head = await readHead(files, layout.car)
    if (head.did !== did)
      throw new ExportUnreadable(
        `this export holds the repository of ${head.did}, not of ${did}; choose the export of ${did}`,
      )
    return {
      url,
      layout,
      head,
      fetch: (requested, init) => answer(files, layout, head, requested, init?.signal ?? undefined),
      close: () => files.close(),
    }
  } catch (err) {
    await files.close()
    throw err
  }
}

/** Finds the repo, blobs, preferences and account state among the export's files. */
export function exportLayout(files: ExportFiles): ExportLayout {
  const names = [...files.entries.keys()]
  const cars = names.filter((n) => n.toLowerCase().endsWith('.car'))
  const car = cars.length === 1 ? cars[0] : cars.find((n) => n === 'repo.car')
  if (!car)
    throw new ExportUnreadable(
      cars.length === 0
        ? 'the export holds no repository (a .car file, e.g. repo.car); export it again with the repository'
        : `the export holds several repositories (${cars.slice(0, 5).join(', ')}); keep only the account's, named repo.car`,
    )
  const blobs = new Map<string, string>()
  for (const name of names) {
    const cid = blobCidOf(name)
    if (cid && !blobs.has(cid)) blobs.set(cid, name)
  }
  const named = (wanted: string[]) => names.find((n) => wanted.includes(basename(n).toLowerCase()))
  const preferences = named(['prefs.json', 'preferences.json'])
  const account = named(['account.json'])
  return { car, blobs, ...(preferences && { preferences }), ...(account && { account }) }
}

/** The blob CID a file is named by (`blobs/<cid>`, `<cid>.jpg`, …), or undefined. */
function blobCidOf(name: string): string | undefined {
  const stem = (basename(name).split('.')[0] ?? '').trim()
  if (!stem.startsWith('b')) return undefined
  try {
    const cid = CID.parse(stem)
    return isBlobCid(cid) ? cid.toString() : undefined
  } catch {
    return undefined
  }
}

/** The commit the CAR's first root names, read from the CAR (each block checked on the way). */
async function readHead(files: ExportFiles, car: string): Promise<ExportHead> {
  const stream = await files.open(car)
  let root: CID | undefined
  try {
    for await (const batch of verifiedCarBatches(stream, { onRoot: (r) => (root = r) })) {
      const wanted = (root as CID).bytes
      const block = batch.find((b) => Buffer.from(b.cid).equals(wanted))
      if (!block) continue
      const commit = decode(block.bytes) as { did?: unknown; rev?: unknown }
      if (typeof commit?.did !== 'string' || typeof commit.rev !== 'string')
        throw new ExportUnreadable(`${car}'s root is not a repository commit`)
      return { did: commit.did, rev: commit.rev, cid: (root as CID).toString() }
    }
  } catch (err) {
    if (err instanceof ExportUnreadable) throw err
    throw new ExportUnreadable(`${car} is not a readable repository (${(err as Error).message})`)
  } finally {
    stream.destroy()
  }
  throw new ExportUnreadable(`${car} does not hold the commit its header names; export the repository again`)
}

/** One sync call, answered from the files as a PDS would (XRPC error bodies included). */
async function answer(
  files: ExportFiles,
  layout: ExportLayout,
  head: ExportHead,
  requested: string,
  signal: AbortSignal | undefined,
): Promise<Response> {
  signal?.throwIfAborted()
  try {
    return await route(files, layout, head, new URL(requested, 'http://export.invalid'), signal)
  } catch (err) {
    // A damaged file answers as a server would: a named refusal the pull records, not a crash.
    if (err instanceof ExportUnreadable) return xrpcError(400, 'InvalidExportFile', err.message)
    throw err
  }
}

async function route(
  files: ExportFiles,
  layout: ExportLayout,
  head: ExportHead,
  url: URL,
  signal: AbortSignal | undefined,
): Promise<Response> {
  const param = (name: string) => url.searchParams.get(name) ?? undefined
  const asked = param('did')
  if (asked !== undefined && asked !== head.did)
    return xrpcError(404, 'RepoNotFound', `this export holds ${head.did}, not ${asked}`)
  switch (url.pathname) {
    case '/xrpc/com.atproto.sync.getLatestCommit':
      return Response.json({ cid: head.cid, rev: head.rev })
    case '/xrpc/com.atproto.sync.getRepo':
      // An export is one state of the repo: it has no history to diff against.
      if (param('since') !== undefined)
        return xrpcError(400, 'InvalidRequest', 'a file export holds no history; ask for the whole repo')
      return streamed(files, layout.car, 'application/vnd.ipld.car', signal)
    case '/xrpc/com.atproto.sync.listBlobs':
      return Response.json(listBlobs(layout, param('cursor'), Number(param('limit') ?? 500)))
    case '/xrpc/com.atproto.sync.getBlob': {
      const cid = param('cid') ?? ''
      const entry = layout.blobs.get(cid)
      if (!entry) return xrpcError(404, 'BlobNotFound', 'the export holds no file for this blob')
      // A damaged file will not heal: it is named missing at once, not retried as a cut would be.
      if (!(await hashesTo(files, entry, cid)))
        return xrpcError(404, 'BlobNotFound', `${entry} is damaged: its bytes do not hash to its name`)
      return streamed(files, entry, 'application/octet-stream', signal)
    }
    case '/xrpc/app.bsky.actor.getPreferences': {
      if (!layout.preferences)
        return xrpcError(404, 'PreferencesNotBackedUp', 'the export holds no prefs.json')
      const prefs = await readJsonFile(files, layout.preferences)
      // goat writes the answer of getPreferences; a bare list is accepted too.
      return Response.json(Array.isArray(prefs) ? { preferences: prefs } : prefs)
    }
    case '/xrpc/com.atproto.server.getSession': {
      const account = layout.account ? await readJsonFile(files, layout.account) : {}
      return Response.json({ ...(typeof account === 'object' ? account : {}), did: head.did })
    }
    default:
      return xrpcError(501, 'MethodNotImplemented', `a file export does not answer ${url.pathname}`)
  }
}

function listBlobs(layout: ExportLayout, cursor: string | undefined, limit: number) {
  const all = [...layout.blobs.keys()].sort()
  const from = cursor === undefined ? 0 : all.findIndex((cid) => cid > cursor)
  const size = Number.isInteger(limit) && limit > 0 ? Math.min(limit, 1000) : 500
  const cids = from < 0 ? [] : all.slice(from, from + size)
  const last = cids.at(-1)
  return { cids, ...(cids.length === size && last && { cursor: last }) }
}

async function hashesTo(files: ExportFiles, name: string, cid: string): Promise<boolean> {
  const hash = createHash('sha256')
  for await (const chunk of await files.open(name)) hash.update(chunk as Buffer)
  return hash.digest().equals(CID.parse(cid).multihash.digest)
}

async function streamed(
  files: ExportFiles,
  name: string,
  type: string,
  signal: AbortSignal | undefined,
): Promise<Response> {
  const stream = await files.open(name)
  signal?.addEventListener('abort', () => stream.destroy(signal.reason as Error), { once: true })
  const size = files.entries.get(name)
  return new Response(Readable.toWeb(stream) as ReadableStream<Uint8Array>, {
    headers: { 'content-type': type, ...(size !== undefined && { 'content-length': String(size) }) },
  })
}

async function readJsonFile(files: ExportFiles, name: string): Promise<unknown> {
  const size = files.entries.get(name) ?? 0
  if (size > MAX_JSON_FILE) throw new ExportUnreadable(`${name} is over ${MAX_JSON_FILE} bytes`)
  const chunks: Buffer[] = []
  for await (const chunk of await files.open(name)) chunks.push(chunk as Buffer)
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    throw new ExportUnreadable(`${name} is not JSON`)
  }
}

function xrpcError(status: number, error: string, message: string): Response {
  return Response.json({ error, message }, { status })
}
