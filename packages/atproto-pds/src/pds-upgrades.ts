import { once } from 'node:events'
import type { Server } from 'node:http'
import type { PDS } from '@atproto/pds'

type UpgradeListener = (...args: unknown[]) => void

/**
 * Serves the PDS's WebSocket subscriptions (`com.atproto.sync.subscribeRepos`, ...) on
 * `server`. @atproto/xrpc-server attaches its upgrade handler only to an HTTP server that
 * the PDS's own `app.listen` creates; a server of ours in front never sees it, and relays
 * and AppViews get HTTP 401 instead of the firehose. So we let `app.listen` make a server
 * once (on a loopback port, closed at once) and move its upgrade listeners to ours.
 */
export async function forwardPdsUpgrades(pds: PDS, server: Server): Promise<void> {
  const probe = pds.app.listen(0, '127.0.0.1') as Server
  try {
    await once(probe, 'listening')
    const listeners = probe.listeners('upgrade') as UpgradeListener[]
    if (listeners.length === 0) throw new Error('the PDS installed no WebSocket upgrade handler')
    for (const listener of listeners) server.on('upgrade', listener)
  } finally {
    probe.close()
  }
}
