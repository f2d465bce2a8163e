import { bearerSourceClient, EngineError, type TransferEngine } from '@pds-transfer/destination'
import type { FastifyInstance } from 'fastify'

/** Path of the test hook our harness destination serves (conformance/README.md, "destination mode"). */
export const START_HOOK_PATH = '/conformance/start-transfer'

/**
 * The black-box test hook: `POST {did, sourceUrl, accessToken}` starts a pull of `did` from
 * `sourceUrl` with that bearer token, as if the user had just signed in at the source, and
 * answers `{transferId}`. TEST DEPLOYMENTS ONLY: whoever can call it can make the PDS import
 * accounts from any source.
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
}
