/**
 * A sending PDS in its own process, for drills that kill it (`kill -9`) in the middle of
 * completeTransfer and start it again on the same directory and port. Configured by
 * environment: PLC_URL, SOURCE_DIR, SOURCE_PORT, AUTH_SECRET (hex; tokens issued by a
 * `TestTokenAuth` with that secret are accepted, across restarts) and HOLD_AT (optional):
 * where completeTransfer stops forever, after telling the test `{ held: HOLD_AT }`:
 * `deactivate` (the code was taken, the account not yet deactivated), `sign` (deactivated,
 * not yet signed) or `answer` (the signed operation is stored, not yet sent back).
 * Its first message is `{ ready: true, url }`. It exits when the test process is gone.
 */

import { exitWithParent } from './child-peer.ts'
import { overrideSource } from './override-source.ts'
import { startSourceServer } from './source-server.ts'
import { TestTokenAuth } from './test-auth.ts'

const env = (name: string): string => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is required`)
  return value
}
exitWithParent()
const holdAt = process.env.HOLD_AT
const hold = async (point: string): Promise<void> => {
  if (holdAt !== point) return
  process.send?.({ held: point })
  await new Promise(() => {})
}

const source = await startSourceServer({
  plc: { url: env('PLC_URL'), close: async () => {} },
  dir: env('SOURCE_DIR'),
  port: Number(env('SOURCE_PORT')),
  auth: new TestTokenAuth(Buffer.from(env('AUTH_SECRET'), 'hex')),
  wrapSource: (store) =>
    overrideSource(store, {
      async deactivate(did, options) {
        await hold('deactivate')
        await store.deactivate(did, options)
        await hold('sign')
      },
    }),
  wrapTransfers: (store) =>
    new Proxy(store, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver)
        if (prop !== 'update') return typeof value === 'function' ? value.bind(target) : value
        return async (...args: Parameters<typeof store.update>) => {
          await target.update(...args)
          if (args[1].completion?.signedOperation) await hold('answer')
        }
      },
    }),
})
process.send?.({ ready: true, url: source.url })
