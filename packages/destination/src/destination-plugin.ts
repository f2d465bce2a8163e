import { buildWellKnown, isUuidV7, NSID, WELL_KNOWN_CACHE_CONTROL, WELL_KNOWN_PATH } from '@pds-transfer/core'
import type { IdentityAlert } from '@pds-transfer/identity'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { InboundTransfer } from './inbound-transfer.ts'
import type { KeyRing } from './key-ring.ts'
import type { TransferEngine } from './transfer-engine.ts'

export interface DestinationPluginOptions {
  engine: TransferEngine
  keys: KeyRing
  /** This PDS's service DID, published in its well-known document. */
  serviceDid: string
  /** Wire extensions to advertise (spec/extensions.md; default: the engine's). */
  extensions?: readonly string[]
  /** Rotate keys this often (default hourly); rotation also runs at start. */
  rotateEveryMs?: number
  /**
   * Check the PLC state of every moved account inside its watch window (72 h) this often
   * (default every 10 minutes; 0 turns the watch off, e.g. when another worker runs it).
   */
  watchEveryMs?: number
  /**
   * Told of each newly detected rollback (the PLC log moved the account away from us), with the
   * watcher's alert for the operation: alert the user, e.g. by email (an `AlertSink` of
   * @pds-transfer/identity). It is also on the transfer's status and /migrate page. Default:
   * logged as an error.
   */
  onRollback?: (transfer: InboundTransfer, alert: IdentityAlert) => void | Promise<void>
}

/**
 * The receiving side's public routes: `/.well-known/atproto-transfer` with our HPKE keys, and
 * `getTransferStatus` for inbound transfers. The transferId (a UUIDv7 with 74 random bits)
 * acts as the capability for status reads; the migration UI holds it.
 */
export const destinationPlugin = fp(
  async (app: FastifyInstance, opts: DestinationPluginOptions) => {
    await opts.keys.rotate()
    const timer = setInterval(() => {
      void opts.keys.rotate().catch((err: unknown) => app.log.error({ err }, 'HPKE key rotation failed'))
    }, opts.rotateEveryMs ?? 3600_000)
    timer.unref()
    app.addHook('onClose', async () => clearInterval(timer))

    // Section "Adversarial migration": watch the PLC log of moved accounts for 72 hours.
    const watchEveryMs = opts.watchEveryMs ?? 600_000
    if (watchEveryMs > 0) {
      const onRollback =
        opts.onRollback ??
        ((t: InboundTransfer) => app.log.error({ did: t.did, rollback: t.rollback }, 'PLC rollback detected'))
      let watching = false
      const watch = setInterval(() => {
        if (watching) return
        watching = true
        opts.engine
          .checkRollbacks(Date.now(), (failure) =>
            app.log.warn(failure, 'PLC rollback watch: DID not checked'),
          )
          .then(async (flagged) => {
            for (const { transfer, alert } of flagged) await onRollback(transfer, alert)
          })
          .catch((err: unknown) => app.log.error({ err }, 'PLC rollback watch failed'))
          .finally(() => {
            watching = false
          })
      }, watchEveryMs)
      watch.unref()
      app.addHook('onClose', async () => clearInterval(watch))
    }

    app.get(WELL_KNOWN_PATH, async (_req, reply) => {
      reply.header('cache-control', WELL_KNOWN_CACHE_CONTROL)
      const now = Math.floor(Date.now() / 1000)
      return buildWellKnown({
        did: opts.serviceDid,
        algorithms: opts.keys.algorithms,
        keys: await opts.keys.published(now),
        extensions: opts.extensions ?? opts.engine.extensions,
        now,
      })
    })

    app.get(`/xrpc/${NSID.getTransferStatus}`, async (request, reply) => {
      const { transferId } = request.query as { transferId?: unknown }
      if (typeof transferId !== 'string' || !isUuidV7(transferId)) {
        return reply.code(400).send({ error: 'InvalidRequest', message: 'transferId must be a UUIDv7' })
      }
      const transfer = await opts.engine.get(transferId)
      if (!transfer)
        return reply.code(404).send({ error: 'TransferNotFound', message: `no transfer ${transferId}` })
      return statusView(transfer)
    })
  },
  { name: '@pds-transfer/destination', fastify: '5.x' },
)

/** The getTransferStatus output for an inbound transfer. */
export function statusView(t: InboundTransfer) {
  return {
    transferId: t.transferId,
    did: t.did,
    status: t.status,
    stage: t.stage,
    progress: {
      ...t.progress,
      ...(t.expected && { bytesExpected: t.expected.bytes, blobsExpected: t.expected.blobs }),
    },
    ...(t.endOfStream && { endOfStream: t.endOfStream }),
    ...(t.missingBlobs.length > 0 && { missingBlobs: t.missingBlobs }),
    ...(t.failure && { error: t.failure.reason, reason: t.failure.message }),
    ...(t.rollback && { rollback: t.rollback }),
  }
}
