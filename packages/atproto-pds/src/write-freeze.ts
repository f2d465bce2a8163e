import type { AppContext } from '@atproto/pds'
import { InvalidRequestError } from '@atproto/xrpc-server'

type ActorStore = AppContext['actorStore']

/**
 * Stops writes to an account at a precise point, for the end of a move. The reference PDS
 * checks that an account is active when a write starts and commits it later, in
 * `actorStore.transact`; a write that passed the check just before the deactivation would
 * commit after completeTransfer read the final head, be acknowledged here and be missing at
 * the next PDS. So every `transact` of a frozen account is refused, and `freeze` resolves
 * only once those already running have finished (AccountSource.deactivate's contract).
 */
export class WriteFreeze {
  private static readonly installed = new WeakMap<ActorStore, WriteFreeze>()
  /** Frozen accounts; `deactivated` once the deactivation the freeze protects has been written. */
  private readonly frozen = new Map<string, { deactivated: boolean }>()
  private readonly running = new Map<string, number>()
  private readonly idle = new Map<string, (() => void)[]>()

  /** The freeze of this PDS's actor store (one per store: both transfer roles share it). */
  static of(ctx: AppContext): WriteFreeze {
    let freeze = WriteFreeze.installed.get(ctx.actorStore)
    if (!freeze) {
      freeze = new WriteFreeze(ctx)
      WriteFreeze.installed.set(ctx.actorStore, freeze)
    }
    return freeze
  }

  private constructor(private readonly ctx: AppContext) {
    const { actorStore } = ctx
    const transact = actorStore.transact.bind(actorStore)
    actorStore.transact = (async (did: string, fn: Parameters<ActorStore['transact']>[1]) => {
      if (this.frozen.has(did) && !(await this.reactivatedElsewhere(did))) {
        throw new InvalidRequestError('this account is moving to another server', 'AccountDeactivated')
      }
      this.running.set(did, (this.running.get(did) ?? 0) + 1)
      try {
        return await transact(did as never, fn)
      } finally {
        const left = (this.running.get(did) ?? 1) - 1
        if (left > 0) this.running.set(did, left)
        else {
          this.running.delete(did)
          for (const resolve of this.idle.get(did)?.splice(0) ?? []) resolve()
        }
      }
    }) as ActorStore['transact']
  }

  /** Refuses new writes of `did`; resolves when none is running any more. */
  async freeze(did: string): Promise<void> {
    this.frozen.set(did, { deactivated: false })
    if (!this.running.has(did)) return
    await new Promise<void>((resolve) => this.idle.set(did, [...(this.idle.get(did) ?? []), resolve]))
  }

  /** The deactivation is written: from now on, an account active again was reactivated by its user. */
  deactivated(did: string): void {
    const entry = this.frozen.get(did)
    if (entry) entry.deactivated = true
  }

  /** Writes of `did` are allowed again (the move did not happen, or the account came back here). */
  thaw(did: string): void {
    this.frozen.delete(did)
  }

  /**
   * Whether the user reactivated the account through the PDS itself after our deactivation (a
   * move they gave up on): then the freeze is over. Never during the freeze's first moments,
   * before the deactivation is written, when "active" only means "not yet deactivated".
   */
  private async reactivatedElsewhere(did: string): Promise<boolean> {
    if (!this.frozen.get(did)?.deactivated) return false
    const account = await this.ctx.accountManager.getAccount(did as `did:${string}:${string}`, {
      includeDeactivated: true,
    })
    if (account && !account.deactivatedAt) {
      this.thaw(did)
      return true
    }
    return false
  }
}
