import { readFile, rename, writeFile } from 'node:fs/promises'
import { emptyWatchState, type WatchState } from './identity-watch.ts'

/** The watcher's state from `path`; an empty state when the file does not exist yet. */
export async function readWatchState(path: string): Promise<WatchState> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyWatchState()
    throw err
  }
  const state = JSON.parse(text) as WatchState
  if (state?.version !== 1 || typeof state.dids !== 'object')
    throw new Error(`${path} is not a pds-identity watch state (version 1); pass another --state file`)
  return state
}

/** Writes the state whole, through a temporary file, so a crash never leaves half a file. */
export async function writeWatchState(path: string, state: WatchState): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`)
  await rename(tmp, path)
}
