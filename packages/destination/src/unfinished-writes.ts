/**
 * Names for what a sink writes before it is verified (a blob's temporary file, a repo's
 * staging), such that a later process can tell the leftovers of a writer that died (SIGKILL,
 * a crash: no `abort` or `discard` ran) from what a live writer is still writing. Invariant:
 * a name is swept only when the process it names is gone.
 */
import { randomUUID } from 'node:crypto'

/** A fresh name owned by this process: `<pid>-<uuid>`. */
export function unfinishedName(): string {
  return `${process.pid}-${randomUUID()}`
}

/**
 * Whether `name` (from `unfinishedName`, possibly with a suffix) belongs to a writer that is
 * gone: its pid is not this process and no longer running. A name without a pid (written
 * before names carried one) counts as gone.
 */
export function writerGone(name: string): boolean {
  const pid = Number(/^(\d+)-/.exec(name)?.[1])
  if (!Number.isSafeInteger(pid) || pid <= 0) return true
  if (pid === process.pid) return false
  try {
    process.kill(pid, 0)
    return false
  } catch (err) {
    // EPERM: running, under another user.
    return (err as NodeJS.ErrnoException).code !== 'EPERM'
  }
}
