import type { SourceClient } from './source-client.ts'

/** Longest wait for the source's answer: the caller goes on without it. */
const TIMEOUT_MS = 10_000

/**
 * The rev of the source's current head, from `com.atproto.sync.getLatestCommit` (every PDS
 * serves it; the v1 transfer endpoints do not include it), or undefined when the source does
 * not tell: the caller must then assume the head has not moved.
 */
export async function sourceHeadRev(client: SourceClient, did: string): Promise<string | undefined> {
  try {
    const res = await client.fetch(`/xrpc/com.atproto.sync.getLatestCommit?did=${encodeURIComponent(did)}`, {
      signal: AbortSignal.timeout(TIMEOUT_MS),
    })
    if (!res.ok) return undefined
    const body = (await res.json()) as { rev?: unknown }
    return typeof body.rev === 'string' ? body.rev : undefined
  } catch {
    return undefined
  }
}
