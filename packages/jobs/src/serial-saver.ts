/**
 * Coalesces saves of a growing state: one save at a time, and after it one more if the state
 * changed meanwhile, so a job storing many blobs writes its progress at most once per round trip
 * and the last save always holds the newest state.
 */
export class SerialSaver {
  private running: Promise<void> | undefined
  private dirty = false

  constructor(private readonly save: () => Promise<void>) {}

  /** Asks for a save of the current state (soon; never two at once). */
  request(): void {
    this.dirty = true
    if (!this.running) this.running = this.loop()
  }

  /** Resolves once every requested save is done. */
  async flush(): Promise<void> {
    while (this.running) await this.running
  }

  private async loop(): Promise<void> {
    try {
      while (this.dirty) {
        this.dirty = false
        await this.save().catch(() => {})
      }
    } finally {
      this.running = undefined
    }
  }
}
