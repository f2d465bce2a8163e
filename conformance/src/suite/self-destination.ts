import { type DestinationServer, startDestinationServer } from '../harness/destination-server.ts'
import type { PlcDirectory } from '../harness/plc-directory.ts'
import { START_HOOK_PATH } from '../harness/start-hook.ts'
import { engineDriver, httpHookDriver } from './destination-drivers.ts'
import type { DestinationTarget } from './destination-target.ts'
import type { DraftDestinationTarget } from './draft-destination-checks.ts'
import { startHostileDraftSource } from './hostile-draft-source.ts'
import { startHostileSource } from './hostile-source.ts'

/** Our own destination (SQLite store) as a suite target, with the hostile source beside it. */
export interface SelfDestination {
  target: DestinationTarget
  /** The same destination against our hostile draft source (`draftDestinationChecks`). */
  draftTarget: DraftDestinationTarget
  destination: DestinationServer
  close(): Promise<void>
}

export async function startSelfDestination(options: {
  plc: Pick<PlcDirectory, 'url'>
}): Promise<SelfDestination> {
  const destination = await startDestinationServer({ plc: options.plc, startHook: true })
  const hostile = await startHostileSource({
    plcUrl: options.plc.url,
    destinationClientId: destination.clientId,
  })
  const hasRepo = (did: string) =>
    destination.store.db.prepare('SELECT 1 FROM repo_root WHERE did = ?').get(did) !== undefined
  const hostileDraft = await startHostileDraftSource({
    plcUrl: options.plc.url,
    destinationClientId: destination.clientId,
  })
  const inside = engineDriver(destination.engine, destination.sink, hasRepo)
  const driver = {
    url: destination.url,
    verdictTimeoutMs: 30_000,
    // Started and followed over HTTP exactly as in black-box mode (the start hook and
    // getTransferStatus); only the probe looks inside, which HTTP cannot, and the PLC code is
    // entered through the engine, as /migrate does (the harness serves no complete hook).
    ...httpHookDriver(destination.url, `${destination.url}${START_HOOK_PATH}`),
    probe: inside.probe,
    complete: inside.complete,
  }
  return {
    target: { ...driver, hostile },
    draftTarget: { ...driver, hostile: hostileDraft },
    destination,
    async close() {
      await hostileDraft.close()
      await hostile.close()
      await destination.close()
    },
  }
}
