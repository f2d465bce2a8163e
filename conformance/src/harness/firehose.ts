import { Subscription } from '@atproto/xrpc-server'

/** One event of `subscribeRepos`, as decoded (#commit names the account `repo`, the others `did`). */
export type FirehoseEvent = { $type: string; did?: string; repo?: string; [field: string]: unknown }

/**
 * Reads `subscribeRepos` at `pdsUrl` (a ws:// URL from its public http:// one) into `into`,
 * from the PDS's first event on (cursor 0), as a relay catching up would.
 */
export async function follow(pdsUrl: string, into: FirehoseEvent[], signal: AbortSignal): Promise<void> {
  const sub = new Subscription<FirehoseEvent>({
    service: pdsUrl.replace(/^http/, 'ws'),
    method: 'com.atproto.sync.subscribeRepos',
    getParams: () => ({ cursor: 0 }),
    signal,
    validate: (value) => value as FirehoseEvent,
  })
  try {
    for await (const event of sub) into.push(event)
  } catch (err) {
    if (!signal.aborted) throw err
  }
}

export async function waitFor(done: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !done(); ) {
    if (Date.now() > end) throw new Error('timed out waiting for firehose events')
    await new Promise((r) => setTimeout(r, 50))
  }
}
