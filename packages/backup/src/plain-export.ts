/**
 * An archive's latest backup written out as plain files, the layout goat and other tools read
 * ("nobody is locked in"): `repo.car` (the whole repo at the latest rev, verified again while it
 * is written), `blobs/<cid>` (each blob the repo references), `prefs.json` and `account.json`
 * (the email), when backed up.
 * Each file is written under a temporary name and renamed once its object fully verified.
 */
import { createWriteStream } from 'node:fs'
import { mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { type AccountArchive, ArchiveError, OBJECT_TYPE } from '@pds-transfer/archive'
import { writeRepoCar } from './repo-car-file.ts'

export interface PlainExport {
  rev: string
  records: number
  blobs: number
  /** Blobs the repo references that the archive does not hold (missing at the PDS when backed up). */
  missingBlobs: string[]
  preferences: boolean
  /** Whether `account.json` (the email the PDS shared) was written. */
  accountState: boolean
}

/** Writes the latest backup of `archive` into `outDir` (created if needed). */
export async function exportPlain(
  archive: AccountArchive,
  outDir: string,
  workDir: string,
): Promise<PlainExport> {
  const state = await archive.load()
  const latest = state.latest
  if (!latest) throw new ArchiveError('NoBackup', `the archive holds no backup of ${archive.did}`)
  await mkdir(join(outDir, 'blobs'), { recursive: true })
  const repo = await writeRepoCar(archive, { ...state, latest }, join(outDir, 'repo.car'), workDir)
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
  if (latest.accountState) {
    const account = await archive.readAccountState(latest.accountState)
    await writeFile(join(outDir, 'account.json'), `${JSON.stringify(account, null, 2)}\n`)
  }
  return {
    rev: repo.rev,
    records: repo.records,
    blobs,
    missingBlobs,
    preferences: latest.preferences !== null,
    accountState: latest.accountState !== null,
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
