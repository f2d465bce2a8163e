/**
 * Issue 20's benchmark: the backups of one account (10k posts, 300 images of 1 MiB) on a plain
 * reference PDS in its own process. Timed, with bytes fetched from the PDS and stored in the
 * archive: the first backup; a daily run of the unchanged account; a run after a light change
 * (10 posts, one of them with a new image, one post deleted); and, for comparison, a goat-style
 * full export of the same account (`goat repo export` + `goat blob export`: getRepo to a file,
 * then listBlobs and every getBlob in turn). Each backup is verified against the live PDS.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AtpAgent } from '@atproto/api'
import { verifyRepoCar } from '@atproto/repo'
import { AccountArchive, FsArchiveStore, generateArchiveKeys } from '@pds-transfer/archive'
import { backupAccount, exportPlain } from '@pds-transfer/backup'
import { PlcDidResolver } from '@pds-transfer/destination'
import { fixtureBytes } from '../src/fixtures/build-account.ts'
import { seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { ChildPeer } from '../src/harness/child-peer.ts'
import { freePort } from '../src/harness/destination-server.ts'
import type { PdsAccountShape } from './pds-bench.ts'

const PDS_SCRIPT = join(import.meta.dirname, 'reference-pds-process.ts')

export interface BackupBenchRow {
  run: 'first backup' | 'unchanged' | 'light change' | 'goat-style full export'
  seconds: number
  requests: number
  fetchedMB: number
  storedMB: number
  note: string
}

export async function benchBackups(plcUrl: string, shape: PdsAccountShape): Promise<BackupBenchRow[]> {
  const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-bench-backup-'))
  const pds = await ChildPeer.fork<{ url: string }>(PDS_SCRIPT, {
    DATA_DIR: join(dir, 'pds'),
    PORT: String(await freePort()),
    PLC_URL: plcUrl,
    PLAIN: '1',
  })
  try {
    const { url } = await pds.ready
    const alice = await seedReferenceAccount(url, {
      handle: 'alice.test',
      email: 'alice@example.com',
      password: 'alice-bench-password',
      posts: shape.posts - shape.images,
      images: shape.images,
      imageSide: 64,
      imageBytes: shape.imageBytes,
      follows: shape.follows,
    })
    const archive = new AccountArchive(
      new FsArchiveStore(join(dir, 'archive')),
      await generateArchiveKeys(),
      alice.did,
    )
    const resolver = new PlcDidResolver(plcUrl)
    const rows: BackupBenchRow[] = []
    const counted = () => {
      let requests = 0
      const f: typeof fetch = (input, init) => {
        requests++
        return fetch(input, init)
      }
      return { fetch: f, requests: () => requests }
    }
    const backup = async (run: BackupBenchRow['run']) => {
      const c = counted()
      const started = performance.now()
      const result = await backupAccount(alice.did, { archive, resolver, workDir: dir, fetch: c.fetch })
      const seconds = (performance.now() - started) / 1000
      const repo = result.manifest.repo.object
      rows.push({
        run,
        seconds,
        requests: c.requests(),
        fetchedMB: (result.fetched.repoBytes + result.fetched.blobBytes) / 1e6,
        storedMB: result.storedBytes / 1e6,
        note: result.unchanged
          ? 'head unchanged'
          : `repo ${result.manifest.repo.kind}: ${(result.fetched.repoBytes / 1e3).toFixed(1)} kB fetched, object ${(repo.size / 1e3).toFixed(1)} of ${(repo.plainSize / 1e3).toFixed(1)} kB plain; ${result.fetched.blobs} blobs`,
      })
    }
    await backup('first backup')
    await backup('unchanged')

    const agent = new AtpAgent({ service: url })
    await agent.login({ identifier: alice.handle, password: alice.password })
    const image = await agent.uploadBlob(fixtureBytes(shape.imageBytes, 4242), { encoding: 'image/png' })
    for (let i = 0; i < 10; i++) {
      await agent.post({
        text: `a light change ${i}`,
        createdAt: new Date().toISOString(),
        ...(i === 0 && {
          embed: { $type: 'app.bsky.embed.images', images: [{ image: image.data.blob, alt: 'new' }] },
        }),
      })
    }
    const oldest = await agent.com.atproto.repo.listRecords({
      repo: alice.did,
      collection: 'app.bsky.feed.post',
      limit: 1,
      reverse: true,
    })
    await agent.com.atproto.repo.deleteRecord({
      repo: alice.did,
      collection: 'app.bsky.feed.post',
      rkey: (oldest.data.records[0]?.uri ?? '').split('/').pop() as string,
    })
    await backup('light change')

    // The archive holds exactly the live repo: exported, it is the PDS's own head.
    const out = join(dir, 'export')
    await exportPlain(archive, out, dir)
    const live = await verifyRepoCar(
      new Uint8Array(
        await (await fetch(`${url}/xrpc/com.atproto.sync.getRepo?did=${alice.did}`)).arrayBuffer(),
      ),
    )
    const ours = await verifyRepoCar(new Uint8Array(await readFile(join(out, 'repo.car'))))
    if (ours.commit.cid.toString() !== live.commit.cid.toString())
      throw new Error('the backup is not the live repo')
    const verify = await archive.verify({ deep: true })
    if (verify.problems.length > 0) throw new Error(`the archive does not verify: ${verify.problems[0]}`)

    rows.push(await goatStyleExport(url, alice.did, join(dir, 'goat')))
    return rows
  } finally {
    await pds.call({ stop: true }).catch(() => {})
    await rm(dir, { recursive: true, force: true })
  }
}

/** What `goat repo export` and `goat blob export` do: getRepo, then listBlobs and each getBlob in turn. */
async function goatStyleExport(pds: string, did: string, dir: string): Promise<BackupBenchRow> {
  await mkdir(join(dir, 'blobs'), { recursive: true })
  const started = performance.now()
  let requests = 1
  let bytes = 0
  const car = new Uint8Array(
    await (await fetch(`${pds}/xrpc/com.atproto.sync.getRepo?did=${did}`)).arrayBuffer(),
  )
  bytes += car.length
  await writeFile(join(dir, 'repo.car'), car)
  let cursor: string | undefined
  let blobs = 0
  do {
    requests++
    const page = (await (
      await fetch(
        `${pds}/xrpc/com.atproto.sync.listBlobs?did=${did}&limit=500${cursor ? `&cursor=${cursor}` : ''}`,
      )
    ).json()) as { cids: string[]; cursor?: string }
    for (const cid of page.cids) {
      requests++
      const blob = new Uint8Array(
        await (await fetch(`${pds}/xrpc/com.atproto.sync.getBlob?did=${did}&cid=${cid}`)).arrayBuffer(),
      )
      bytes += blob.length
      blobs++
      await writeFile(join(dir, 'blobs', cid), blob)
    }
    cursor = page.cids.length > 0 ? page.cursor : undefined
  } while (cursor)
  const seconds = (performance.now() - started) / 1000
  return {
    run: 'goat-style full export',
    seconds,
    requests,
    fetchedMB: bytes / 1e6,
    storedMB: bytes / 1e6,
    note: `${blobs} blobs, unencrypted, unverified`,
  }
}
