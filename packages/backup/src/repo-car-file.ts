/**
 * The repo of an archive's latest run as one CAR file, verified as it is written: the chain's
 * blocks (repo-chain.ts) walked from the commit by the move's verifier (signature with the key
 * recorded at backup time, MST, every record), each block reached written once, in walk order.
 * Invariant: the file appears at `path` only once the walk has verified; a failure leaves none.
 */
import { mkdtemp, open, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { AccountArchive, ArchiveState, BackupManifest } from '@pds-transfer/archive'
import {
  type RepoStaging,
  type VerifiedBlock,
  type VerifiedRepo,
  verifyStagedRepo,
} from '@pds-transfer/destination'
import { CID } from 'multiformats/cid'
import { carHeader, carSections } from './car-bytes.ts'
import { loadChain, repoChain } from './repo-chain.ts'

/** Writes the repo of `state.latest` to `path`; returns what the walk verified. */
export async function writeRepoCar(
  archive: AccountArchive,
  state: ArchiveState & { latest: BackupManifest },
  path: string,
  workDir: string,
): Promise<VerifiedRepo> {
  const dir = await mkdtemp(join(workDir, 'repo-car-'))
  const partial = `${path}.partial`
  try {
    const blocks = await loadChain(archive, repoChain(state), dir, 'blocks')
    const car = await open(partial, 'w')
    try {
      const root = CID.parse(state.latest.repo.commitCid)
      await car.write(carHeader(root.bytes))
      const reached = new ReachedBlocks(blocks, async (batch) => {
        await car.write(carSections(batch))
      })
      const repo = await verifyStagedRepo({
        staging: reached,
        root,
        did: archive.did,
        signingKey: state.latest.repo.signingKey,
      })
      await reached.flush()
      await car.sync()
      await car.close()
      await rename(partial, path)
      return repo
    } catch (err) {
      await car.close().catch(() => {})
      await rm(partial, { force: true })
      throw err
    } finally {
      await blocks.discard()
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** A staging that hands on, once each and in order, the blocks read from it (in batches). */
class ReachedBlocks implements RepoStaging {
  private batch: VerifiedBlock[] = []
  private size = 0
  private readonly seen = new Set<string>()
  constructor(
    private readonly inner: RepoStaging,
    private readonly emit: (blocks: VerifiedBlock[]) => Promise<void>,
  ) {}

  async flush(): Promise<void> {
    const batch = this.batch
    this.batch = []
    this.size = 0
    if (batch.length > 0) await this.emit(batch)
  }

  put(blocks: VerifiedBlock[]): Promise<void> {
    return this.inner.put(blocks)
  }

  async get(cid: Uint8Array): Promise<Uint8Array | undefined> {
    const bytes = await this.inner.get(cid)
    const key = Buffer.from(cid).toString('base64')
    if (bytes && !this.seen.has(key)) {
      this.seen.add(key)
      this.batch.push({ cid: Uint8Array.from(cid), bytes: Uint8Array.from(bytes) })
      this.size += bytes.length
      if (this.size > 1 << 20) await this.flush()
    }
    return bytes
  }

  discard(): Promise<void> {
    return this.inner.discard()
  }
}
