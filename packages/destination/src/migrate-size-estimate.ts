/**
 * How big an account is before it moves, from what every PDS serves without a sign-in (the
 * checklist is shown before it): `com.atproto.sync.listBlobs` counts the images and files, and
 * `HEAD com.atproto.sync.getBlob` gives each one's size (Content-Length). The repository's own
 * size is not served by any endpoint (getRepo streams without a Content-Length, and
 * `checkAccountStatus`, which counts blocks and records, needs the sign-in), so the estimate
 * is a lower bound: the images and files, plus "your posts, likes and follows". Found on
 * `@atproto/pds` 0.5.35; spec/dialect-plain-pds.md §"Size before the move".
 *
 * Bounded by a time budget: what could not be listed or sized in time is said to be more
 * ("at least N"), or extrapolated from what was sized and said to be "about".
 */
import { forEachBounded } from './bounded-each.ts'
import { size } from './html-page.ts'

/** What the source told about an account's images and files. */
export interface SizeEstimate {
  /** Images and files listBlobs named. */
  blobs: number
  /** Whether listBlobs was read to its end (else `blobs` is a lower bound). */
  allListed: boolean
  /** How many were sized, and their total bytes. */
  sized: number
  sizedBytes: number
  /** Named by listBlobs, but getBlob answered that the source does not have it (now). */
  notServed: number
}

/** A rate assumed for the time estimate (and said on the page): a typical one between two servers. */
export const ASSUMED_BYTES_PER_SECOND = 10 * 1024 * 1024
/** Images and files fetched per second besides their bytes (four at a time, each a request). */
export const ASSUMED_BLOBS_PER_SECOND = 40

/**
 * Lists and sizes the account's images and files at `source` within `budgetMs` (4 s). Undefined
 * when the source will not list them (an old or unusual PDS): the checklist then says nothing
 * about size rather than something wrong.
 */
export async function estimateAccountSize(
  source: string,
  did: string,
  options: { budgetMs?: number; concurrency?: number; pageLimit?: number } = {},
): Promise<SizeEstimate | undefined> {
  const deadline = Date.now() + (options.budgetMs ?? 4000)
  const left = () => Math.max(1, deadline - Date.now())
  const listed: string[] = []
  let cursor: string | undefined
  let allListed = false
  try {
    while (Date.now() < deadline) {
      const query = new URLSearchParams({
        did,
        limit: String(options.pageLimit ?? 1000),
        ...(cursor && { cursor }),
      })
      const res = await fetch(`${source}/xrpc/com.atproto.sync.listBlobs?${query}`, {
        signal: AbortSignal.timeout(left()),
      })
      if (!res.ok) throw new Error(`listBlobs: HTTP ${res.status}`)
      const page = (await res.json()) as { cids?: unknown; cursor?: unknown }
      if (!Array.isArray(page.cids)) throw new Error('listBlobs: no list of CIDs')
      const fresh = page.cids.filter((c): c is string => typeof c === 'string')
      listed.push(...fresh)
      // A cursor that does not move, or an empty page, is the end (as the plain reader judges it).
      if (fresh.length === 0 || typeof page.cursor !== 'string' || page.cursor === cursor) {
        allListed = true
        break
      }
      cursor = page.cursor
    }
  } catch {
    // Nothing listed at all: say nothing. Some pages listed: they are a lower bound.
    if (listed.length === 0) return undefined
  }
  const estimate: SizeEstimate = { blobs: listed.length, allListed, sized: 0, sizedBytes: 0, notServed: 0 }
  await forEachBounded(listed, options.concurrency ?? 8, async (cid) => {
    if (Date.now() >= deadline) return
    const query = new URLSearchParams({ did, cid })
    const res = await fetch(`${source}/xrpc/com.atproto.sync.getBlob?${query}`, {
      method: 'HEAD',
      signal: AbortSignal.timeout(left()),
    }).catch(() => undefined)
    // The reference PDS answers 400 (BlobNotFound) for a blob it lists but cannot read.
    if (res?.status === 400 || res?.status === 404) estimate.notServed++
    const length = Number(res?.ok ? res.headers.get('content-length') : Number.NaN)
    if (Number.isSafeInteger(length) && length >= 0) {
      estimate.sized++
      estimate.sizedBytes += length
    }
  })
  return estimate
}

/**
 * The images and files in bytes: exact when every one was sized, else extrapolated from those
 * that were (`exact` false) over those the source can send.
 */
export function blobBytes(e: SizeEstimate): { bytes: number; exact: boolean } {
  const servable = e.blobs - e.notServed
  if (e.allListed && e.sized === servable) return { bytes: e.sizedBytes, exact: true }
  if (e.sized === 0) return { bytes: 0, exact: false }
  return { bytes: Math.round((e.sizedBytes / e.sized) * servable), exact: false }
}

/** The checklist's sentence: how big, how long (at the assumed rate, said so), what is not counted. */
export function sizeSentence(e: SizeEstimate): string {
  const { bytes, exact } = blobBytes(e)
  const count = `${e.allListed ? '' : 'at least '}${e.blobs.toLocaleString('en')} ${e.blobs === 1 ? 'image or file' : 'images and files'}`
  const lacking =
    e.notServed > 0
      ? ` Your current server could not send ${e.notServed} of them just now; the move copies everything else and then shows which posts they belong to.`
      : ''
  if (e.blobs === 0 && e.allListed)
    return 'No images or files: only your posts, likes, follows and settings are copied.'
  const amount = bytes > 0 ? `${exact && e.allListed ? '' : 'about '}${size(bytes)}` : undefined
  const seconds = bytes / ASSUMED_BYTES_PER_SECOND + e.blobs / ASSUMED_BLOBS_PER_SECOND
  const minutes = Math.max(1, Math.floor(seconds / 60))
  const time = e.allListed ? duration(seconds) : `at least ${minutes} ${minutes === 1 ? 'minute' : 'minutes'}`
  return `${count}${amount ? ` (${amount})` : ''}, plus your posts, likes, follows and settings. Copying takes ${time} at ${size(ASSUMED_BYTES_PER_SECOND)}/s, a common speed between two servers; the next page shows the real speed and time left.${lacking}`
}

/** "less than a minute", "about a minute", "about 4 minutes", "about 2 h 10 min". */
export function duration(seconds: number): string {
  const minutes = Math.round(seconds / 60)
  if (seconds < 60) return 'less than a minute'
  if (minutes === 1) return 'about a minute'
  if (minutes < 60) return `about ${minutes} minutes`
  return `about ${Math.floor(minutes / 60)} h ${minutes % 60} min`
}
