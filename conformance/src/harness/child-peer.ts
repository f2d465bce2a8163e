import { type ChildProcess, fork } from 'node:child_process'

/** Children still running: killed when this process exits, so none outlives a crashed test. */
const live = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL')
})

/**
 * A TypeScript harness script run in its own process (a PDS that can be killed, or measured
 * alone), talked to over IPC: its first message carries `ready: true`; requests are
 * `{ id, ...message }` answered by `{ id, result }` or `{ id, error }`. A child script must
 * exit when its IPC channel closes (`exitWithParent`): the 'exit' hook below cannot run when
 * the test process itself is SIGKILLed.
 */
export class ChildPeer<Ready = Record<string, unknown>> {
  private next = 0
  private readonly pending = new Map<number, (msg: { result?: unknown; error?: string }) => void>()
  /** The child's first message. */
  readonly ready: Promise<Ready>
  readonly exited: Promise<number | null>

  constructor(readonly child: ChildProcess) {
    live.add(child)
    this.exited = new Promise((resolve) =>
      child.once('exit', (code) => {
        live.delete(child)
        resolve(code)
      }),
    )
    this.ready = new Promise((resolve, reject) => {
      void this.exited.then((code) => reject(new Error(`child exited with ${code} before it was ready`)))
      child.on('message', (msg: { id?: number; ready?: boolean; result?: unknown; error?: string }) => {
        if (msg.ready) resolve(msg as Ready)
        else if (msg.id !== undefined) this.pending.get(msg.id)?.(msg)
      })
    })
  }

  /** Runs `script` (a .ts file) with tsx, `env` added to this process's environment. */
  static fork<R>(script: string, env: Record<string, string>): ChildPeer<R> {
    return new ChildPeer<R>(
      fork(script, { env: { ...process.env, ...env }, execArgv: ['--import', 'tsx'], stdio: 'inherit' }),
    )
  }

  call<T>(message: Record<string, unknown>): Promise<T> {
    const id = this.next++
    return new Promise((resolve, reject) => {
      this.pending.set(id, (msg) => {
        this.pending.delete(id)
        if (msg.error) reject(new Error(msg.error))
        else resolve(msg.result as T)
      })
      this.child.send({ id, ...message })
    })
  }

  /** SIGKILL: no shutdown code runs, as in a crash. */
  async kill(): Promise<void> {
    if (this.child.exitCode === null) this.child.kill('SIGKILL')
    await this.exited
  }
}

/** For child scripts: exit when the parent is gone (its IPC channel closed), however it died. */
export function exitWithParent(): void {
  process.once('disconnect', () => process.exit(1))
}
