import { type DestinationServer, startDestinationServer } from '../harness/destination-server.ts'
import type { PlcDirectory } from '../harness/plc-directory.ts'
import { engineDriver } from './destination-drivers.ts'
import type { DestinationTarget } from './destination-target.ts'
import { startHostileSource } from './hostile-source.ts'

/** Our own destination (SQLite store) as a suite target, with the hostile source beside it. */
export interface SelfDestination {
  target: DestinationTarget
  destination: DestinationServer
  close(): Promise<void>
}

export async function startSelfDestination(options: {
  plc: Pick<PlcDirectory, 'url'>
  /** Replace the engine's dependencies (a deliberately broken variant). */
  destination?: DestinationServer
}): Promise<SelfDestination> {
  const destination = options.destination ?? (await startDestinationServer({ plc: options.plc }))
  const hostile = await startHostileSource({
    plcUrl: options.plc.url,
    destinationClientId: destination.clientId,
  })
  const hasRepo = (did: string) =>
    destination.store.db.prepare('SELECT 1 FROM repo_root WHERE did = ?').get(did) !== undefined
  return {
    target: {
      url: destination.url,
      hostile,
      verdictTimeoutMs: 30_000,
      ...engineDriver(destination.engine, destination.sink, hasRepo),
    },
    destination,
    async close() {
      await hostile.close()
      if (!options.destination) await destination.close()
    },
  }
}
