import { readFileSync } from 'node:fs'

/**
 * This process's peak resident set in MiB. On Linux it is `VmHWM` of /proc/self/status: the
 * high-water mark of this process's own memory. `process.resourceUsage().maxRSS` is not: Linux
 * carries the parent's RSS at fork time over into a forked-and-exec'd child's `ru_maxrss`, so
 * a child of a large benchmark process would report the parent's size.
 */
export function peakRssMiB(): number {
  try {
    const hwm = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))
    if (hwm) return Number(hwm[1]) / 1024
  } catch {
    // Not Linux: fall through.
  }
  return process.resourceUsage().maxRSS / 1024
}
