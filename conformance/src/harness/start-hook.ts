import { bearerSourceClient, EngineError, type TransferEngine } from '@pds-transfer/destination'
import type { FastifyInstance } from 'fastify'

/** Path of the test hook our harness destination serves (conformance/README.md, "destination mode"). */
export const START_HOOK_PATH = '/conformance/start-transfer'
/** Path of its companion that enters the PLC code (the suite's completion checks, `--complete-hook`). */
export const COMPLETE_HOOK_PATH = '/conformance/complete-transfer'

/**
 * The black-box test hooks: `POST {did, sourceUrl, accessToken}` starts a pull of `did` from
 * `sourceUrl` with that bearer token, as if the user had just signed in at the source, and
 * answers `{transferId}`; `POST {transferId, plcToken}` at the complete hook enters the code as
 * the user would (the outcome is read from getTransferStatus). TEST DEPLOYMENTS ONLY: whoever
 * can call them can make the PDS import accounts from any source.
 */
export function registerStartHook(app: FastifyInstance, engine: TransferEngine): void {
  app.post(START_HOOK_PATH, async (request, reply) => {
    const body = request.body as { did?: unknown; sourceUrl?: unknown; accessToken?: unknown } | undefined
    const { did, sourceUrl, accessToken } = body ?? {}
    if (typeof did !== 'string' || typeof sourceUrl !== 'string' || typeof accessToken !== 'string') {
      return reply
        .code(400)
        .send({ error: 'InvalidRequest', message: 'did, sourceUrl and accessToken are required strings' })
    }
    try {
      const t = await engine.start({ did, client: bearerSourceClient(sourceUrl, accessToken) })
      return { transferId: t.transferId }
    } catch (err) {
      const code = err instanceof EngineError ? err.code : 'StartFailed'
      return reply.code(400).send({ error: code, message: (err as Error).message })
    }
  })
  app.post(COMPLETE_HOOK_PATH, async (request, reply) => {
    const body = request.body as { transferId?: unknown; plcToken?: unknown } | undefined
    const { transferId, plcToken } = body ?? {}
    if (typeof transferId !== 'string' || typeof plcToken !== 'string') {
      return reply
        .code(400)
        .send({ error: 'InvalidRequest', message: 'transferId and plcToken are required strings' })
    }
    try {
      const t = await engine.complete(transferId, { plcToken })
      return { status: t.status, stage: t.stage }
    } catch (err) {
      const code = err instanceof EngineError ? err.code : 'CompleteFailed'
      return reply.code(400).send({ error: code, message: (err as Error).message })
    }
  })
}
