/**
 * An archive's latest backup written out as plain files, the layout goat and other tools read
 * ("nobody is locked in"): `repo.car` (the whole repo at the latest rev, verified again while it
 * is written), `blobs/<cid>` (each blob the repo references), `prefs.json` (when backed up).
 * Each file is written under a temporary name and renamed once its object fully verified.
 */
import { createWriteStream } from 'node:fs'
import { mkdir, mkdtemp, open, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { type AccountArchive, ArchiveError, OBJECT_TYPE } from '@pds-transfer/archive'
import { type RepoStaging, type VerifiedBlock, verifyStagedRepo } from '@pds-transfer/destination'
import { CID } from 'multiformats/cid'
import { carHeader, carSections } from './car-bytes.ts'
import { loadChain, repoChain } from './repo-chain.ts'

export interface PlainExport {
  rev: string
  records: number
  blobs: number
  /** Blobs the repo references that the archive does not hold (missing at the PDS when backed up). */
  missingBlobs: string[]
  preferences: boolean
}

/** Writes the latest backup of `archive` into `outDir` (created; must not hold an export already). */
export async function exportPlain(
  archive: AccountArchive,
  outDir: string,
  workDir: string,
): Promise<PlainExport> {
  const state = await archive.load()
  const latest = state.latest
  if (!latest) throw new ArchiveError('NoBackup', `the archive holds no backup of ${archive.did}`)
  await mkdir(join(outDir, 'blobs'), { recursive: true })
  const dir = await mkdtemp(join(workDir, 'export-'))
  try {
    const blocks = await loadChain(archive, repoChain(state), dir, 'repo')
    try {
      // The walk reads each block the commit reaches exactly as the verifier needs it: those, in that order, are the CAR.
      const root = CID.parse(latest.repo.commitCid)
      const carPath = join(outDir, 'repo.car')
      const car = await open(`${carPath}.partial`, 'w')
      let repo: Awaited<ReturnType<typeof verifyStagedRepo>>
      try {
        const reached = new ReachedBlocks(blocks, async (batch) => {
          await car.write(carSections(batch))
        })
        await car.write(carHeader(root.bytes))
        repo = await verifyStagedRepo({
          staging: reached,
          root,
          did: archive.did,
          signingKey: latest.repo.signingKey,
        })
        await reached.flush()
        await car.sync()
        await car.close()
        await rename(`${carPath}.partial`, carPath)
      } catch (err) {
        await car.close().catch(() => {})
        await rm(`${carPath}.partial`, { force: true })
        throw err
      }
      const missingBlobs: string[] = []
      let blobs = 0
      for (const cid of [...repo.blobCids].sort()) {
        const entry = state.blobs.get(cid)
        if (!entry) {
          missingBlobs.push(cid)
          continue
        }
        await writeAtomically(join(outDir, 'blobs', cid), archive.read(entry.object, OBJECT_TYPE.blob))
        blobs++
      }
      if (latest.preferences) {
        const preferences = await archive.readPreferences(latest.preferences)
        await writeFile(join(outDir, 'prefs.json'), `${JSON.stringify({ preferences }, null, 2)}\n`)
      }
      return {
        rev: repo.rev,
        records: repo.records,
        blobs,
        missingBlobs,
        preferences: latest.preferences !== null,
      }
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

async function writeAtomically(path: string, bytes: AsyncIterable<Uint8Array>): Promise<void> {
  const partial = `${path}.partial`
  try {
    await pipeline(bytes, createWriteStream(partial))
    await rename(partial, path)
  } catch (err) {
    await rm(partial, { force: true })
    throw err
  }
}
