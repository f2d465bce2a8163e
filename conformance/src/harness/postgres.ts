import { execFile } from 'node:child_process'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)
const SCRIPT = new URL('../../../scripts/pg', import.meta.url).pathname

/**
 * A throwaway PostgreSQL on loopback through `scripts/pg` (installed from Debian when absent):
 * a fresh database per call; `restart` stops and starts it on the same port and data, as an
 * operator's restart or a crash recovery does; `destroy` removes everything and can run twice.
 */
export async function startPostgres(): Promise<{
  url: string
  /** Stops the server (fast shutdown), `downMs` later starts it again. */
  restart(downMs?: number): Promise<void>
  destroy(): Promise<void>
}> {
  const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-pg-'))
  const start = async () => (await run('bash', [SCRIPT, 'start', dir], { timeout: 600_000 })).stdout.trim()
  const url = await start()
  return {
    url,
    async restart(downMs = 0) {
      await run('bash', [SCRIPT, 'stop', dir])
      await new Promise((resolve) => setTimeout(resolve, downMs))
      await start()
    },
    async destroy() {
      await run('bash', [SCRIPT, 'destroy', dir])
    },
  }
}
