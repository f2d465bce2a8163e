import type { HeldBlocks, RepoStaging, VerifiedBlock } from './account-sink.ts'

/** Blocks copied into the staging per write: one transaction each, not one per block. */
const COPY_BATCH = 512

/**
 * A diff's staging seen over the repo already committed here (extension repo-diff): a block the
 * diff did not bring is read from the account's repo and copied into the staging, so that once
 * the verifier has walked the new commit (every node and record it reaches), the staging holds
 * the whole new repo and the sink commits it as it would a full CAR; blocks only the old repo
 * reached are left behind. Sound because every block is addressed by its hash: what the
 * account's repo holds was verified when it arrived.
 */
export class LayeredStaging implements RepoStaging {
  private pending: VerifiedBlock[] = []
  private readonly copied = new Map<string, Uint8Array>()
  /** Blocks neither the diff nor the held repo had: the diff did not cover what changed. */
  missing = 0

  constructor(
    readonly inner: RepoStaging,
    private readonly held: HeldBlocks,
  ) {}

  put(blocks: VerifiedBlock[]): Promise<void> {
    return this.inner.put(blocks)
  }

  async get(cid: Uint8Array): Promise<Uint8Array | undefined> {
    const staged = await this.inner.get(cid)
    if (staged) return staged
    const key = Buffer.from(cid).toString('base64')
    const pending = this.copied.get(key)
    if (pending) return pending
    const bytes = await this.held.get(cid)
    if (!bytes) {
      this.missing++
      return undefined
    }
    this.pending.push({ cid, bytes })
    this.copied.set(key, bytes)
    if (this.pending.length >= COPY_BATCH) await this.flush()
    return bytes
  }

  /**
   * Writes the copied blocks still buffered and lets go of the held repo: the staging is then
   * complete for `commitRepo` (which may replace the held repo).
   */
  async finish(): Promise<void> {
    await this.flush()
    await this.held.close()
  }

  /** Drops the staging; the held repo is left as it was. */
  async discard(): Promise<void> {
    this.pending = []
    this.copied.clear()
    await this.held.close().catch(() => {})
    await this.inner.discard()
  }

  private async flush(): Promise<void> {
    if (this.pending.length === 0) return
    const batch = this.pending
    this.pending = []
    this.copied.clear()
    await this.inner.put(batch)
  }
}

/**
 * A diff the source sent did not verify over what is held (a block neither had): the puller
 * asks again for the whole CAR. Not a failure of the transfer.
 */
export class IncompleteDiffError extends Error {
  override readonly name = 'IncompleteDiffError'
}
