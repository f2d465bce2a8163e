import { NSID } from '@pds-transfer/core'
import {
  type AccountSink,
  bearerSourceClient,
  statusView,
  type TransferEngine,
} from '@pds-transfer/destination'
import type { AccountProbe, DestinationStatus, DestinationTarget } from './destination-target.ts'

type Driver = Pick<DestinationTarget, 'start' | 'status' | 'probe' | 'complete'>

/**
 * In-process: our transfer engine started directly (what /migrate does after the OAuth
 * callback), status from its records, and the probe from its account sink.
 */
export function engineDriver(
  engine: TransferEngine,
  sink: AccountSink,
  hasRepo?: (did: string) => boolean | Promise<boolean>,
): Driver {
  return {
    async start({ did, sourceUrl, token }) {
      return (await engine.start({ did, client: bearerSourceClient(sourceUrl, token) })).transferId
    },
    async status(transferId) {
      const t = await engine.get(transferId)
      if (!t) throw new Error(`the engine has no transfer ${transferId}`)
      return statusView(t) as DestinationStatus
    },
    async probe(did, blobs) {
      let stored = 0
      for (const cid of blobs) if (await sink.hasBlob(did, cid)) stored++
      return {
        active: await sink.isActive(did),
        ...(hasRepo && { repo: await hasRepo(did) }),
        blobs: stored,
        via: hasRepo ? 'account sink and repo' : 'account sink (isActive, hasBlob)',
      }
    },
    async complete(transferId, plcToken) {
      // A refusal is the transfer's (its record says why), read back through `status`.
      await engine.complete(transferId, { plcToken }).catch(() => {})
    },
  }
}

/**
 * Black-box: the destination exposes a test hook that starts a pull (see conformance/README.md):
 * `POST <hook>` with JSON `{ did, sourceUrl, accessToken }` answering `{ transferId }`. Status
 * comes from its getTransferStatus by transferId (D14); the probe asks its public sync API,
 * which must not serve a repo or blob of a refused account. With `completeHookUrl`, `POST
 * <complete hook>` with `{ transferId, plcToken }` enters the PLC code (any answer; the outcome
 * is read from getTransferStatus).
 */
export function httpHookDriver(destinationUrl: string, hookUrl: string, completeHookUrl?: string): Driver {
  const base = destinationUrl.replace(/\/$/, '')
  return {
    ...(completeHookUrl && {
      async complete(transferId: string, plcToken: string) {
        const res = await fetch(completeHookUrl, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ transferId, plcToken }),
        })
        await res.body?.cancel()
      },
    }),
    async start({ did, sourceUrl, token }) {
      const res = await fetch(hookUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ did, sourceUrl, accessToken: token }),
      })
      const body = (await res.json().catch(() => ({}))) as { transferId?: unknown; message?: unknown }
      if (!res.ok || typeof body.transferId !== 'string') {
        throw new Error(`the start hook ${hookUrl} answered HTTP ${res.status}: ${JSON.stringify(body)}`)
      }
      return body.transferId
    },
    async status(transferId) {
      const res = await fetch(
        `${base}/xrpc/${NSID.getTransferStatus}?transferId=${encodeURIComponent(transferId)}`,
      )
      const body = (await res.json().catch(() => ({}))) as Record<string, unknown>
      if (!res.ok) throw new Error(`getTransferStatus answered HTTP ${res.status}: ${JSON.stringify(body)}`)
      return body as unknown as DestinationStatus
    },
    async probe(did, blobs): Promise<AccountProbe> {
      const head = await fetch(`${base}/xrpc/com.atproto.sync.getLatestCommit?did=${encodeURIComponent(did)}`)
      await head.body?.cancel()
      let stored = 0
      for (const cid of blobs) {
        const res = await fetch(
          `${base}/xrpc/com.atproto.sync.getBlob?did=${encodeURIComponent(did)}&cid=${cid}`,
        )
        await res.body?.cancel()
        if (res.status === 200) stored++
      }
      return {
        active: head.status === 200,
        repo: head.status === 200,
        // A 200 proves a blob is stored; none from an account that is not served proves nothing.
        blobs: stored > 0 || head.status === 200 ? stored : undefined,
        via: `public sync API: getLatestCommit HTTP ${head.status}, getBlob 200 for ${stored} (a deactivated account may hide what it holds)`,
      }
    },
  }
}
