/** A named moment; `at` is wall-clock milliseconds (`epochMs()`), comparable across processes. */
export interface TimelineEvent {
  at: number
  event: string
}

/** One phase of a migration and how long it took. */
export interface Phase {
  name: string
  seconds: number
}

/** Milliseconds since the epoch with sub-millisecond precision, comparable across processes. */
export const epochMs = (): number => performance.timeOrigin + performance.now()

/** Splits a run into consecutive phases: each `lap` closes the phase that began at the last one. */
export class Phases {
  readonly list: Phase[] = []
  readonly startedAt = epochMs()
  private last = this.startedAt

  lap(name: string, at = epochMs()): void {
    this.list.push({ name, seconds: (at - this.last) / 1000 })
    this.last = at
  }

  /** When the last phase ended. */
  get lastAt(): number {
    return this.last
  }

  get seconds(): number {
    return (this.last - this.startedAt) / 1000
  }
}
