import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { NSID } from '@pds-transfer/core'
import { bearerSourceClient, type InboundTransfer, type SourceClient } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { overrideSource } from '../src/harness/override-source.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'

/**
 * Issue 16, item 3: the destination's disk fills up during a transfer (a real tmpfs, not a mock).
 * Proves that the failure is named `LocalStorage` with a message meant for the user, is not
 * retried as the source's fault, is shown even when the full disk cannot record it, leaves no
 * blob temp files behind, is not resumed as if nothing happened by a restarted engine, and that
 * once space is freed the user's retry imports the account byte-identical to the source.
 */

const SCOPES = [NSID.exportAccount, NSID.getTransferStatus, 'com.atproto.sync.getBlob']
const BLOB_SIZES = Array.from({ length: 10 }, (_, i) => 300_000 + i * 101)

/** Whether this machine lets us mount a tmpfs (root, or a container allowed to). */
const tmpfs = probeTmpfs()
if (!tmpfs.ok) {
  console.warn(`disk-full drills skipped: cannot mount a tmpfs here (${tmpfs.reason}); run as root`)
}

function probeTmpfs(): { ok: true } | { ok: false; reason: string } {
  const dir = mkdtempSync(join(tmpdir(), 'pds-transfer-tmpfs-probe-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { stdio: 'pipe' })
    execFileSync('umount', [dir], { stdio: 'pipe' })
    return { ok: true }
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim()
    return { ok: false, reason: stderr || (err as Error).message }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** A client that counts the export sessions the destination opens at the source. */
function countingClient(url: string, token: string): { client: SourceClient; exports: () => number } {
  const inner = bearerSourceClient(url, token)
  let exports = 0
  return {
    client: {
      url: inner.url,
      fetch(path, init) {
        if (path.includes(NSID.exportAccount)) exports++
        return inner.fetch(path, init)
      },
    },
    exports: () => exports,
  }
}

const incoming = async (blobDir: string) => (await readdir(blobDir)).filter((f) => f.startsWith('.incoming-'))

describe.skipIf(!tmpfs.ok)("the destination's disk fills up during a transfer", () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let base: string
  const mounts: string[] = []
  const dests: DestinationServer[] = []

  function mount(dir: string, size: string): void {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' })
    mounts.push(dir)
  }
  const grow = (dir: string) => execFileSync('mount', ['-o', 'remount,size=64m', dir], { stdio: 'pipe' })

  async function destination(dir: string, client?: SourceClient): Promise<DestinationServer> {
    const dest = await startDestinationServer({
      plc: plcDir,
      dir,
      ...(client && { restoreClient: async () => client }),
    })
    dests.push(dest)
    return dest
  }

  /** Closes a destination (once) so that its files on a tmpfs are released. */
  async function closeDest(dest: DestinationServer): Promise<void> {
    dests.splice(dests.indexOf(dest), 1)
    await dest.close()
  }

  async function account(posts: number): Promise<FixtureAccount> {
    return buildAccount(source.store, {
      plcUrl: plcDir.url,
      pdsUrl: source.url,
      pdsRotationKey: source.rotationKey,
      shape: { posts, blobSizes: BLOB_SIZES },
    })
  }

  /** The destination holds exactly what the source has: repo, every blob, preferences, private state. */
  async function expectIdentical(dest: DestinationServer, a: FixtureAccount): Promise<void> {
    expect(Buffer.from(await dest.store.exportCar(a.did))).toEqual(
      Buffer.from(await source.store.exportCar(a.did)),
    )
    const rows = dest.store.db.prepare('SELECT cid FROM blob WHERE did = ?').all(a.did) as { cid: string }[]
    expect(rows.map((r) => r.cid).sort()).toEqual([...a.blobs.keys()].sort())
    for (const [cid, bytes] of a.blobs) {
      expect(Buffer.from(await readFile(dest.store.blobPath(cid))).equals(Buffer.from(bytes))).toBe(true)
    }
    expect(await dest.store.getPreferences(a.did)).toEqual(await source.store.getPreferences(a.did))
    expect(await dest.store.getAccountState(a.did)).toEqual(await source.store.getAccountState(a.did))
  }

  function expectLocalStorage(t: InboundTransfer | undefined): void {
    expect(t).toMatchObject({ status: 'failed', stage: 'failed', failure: { reason: 'LocalStorage' } })
    // What the user reads: the cause, that nothing moved, and who has to act.
    expect(t?.failure?.message).toMatch(/disk is full or failing/)
    expect(t?.failure?.message).toMatch(/has not moved/)
    expect(t?.failure?.message).toMatch(/freed space/)
  }

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    // Small blobpacks, so that some of them commit before the disk is full.
    source = await startSourceServer({ plc: plcDir, blobpackTarget: 256 * 1024 })
    base = await mkdtemp(join(tmpdir(), 'pds-transfer-disk-full-'))
  }, 60_000)

  afterAll(async () => {
    // Servers first: their SQLite files keep a mount busy.
    for (const dest of dests.splice(0)) await dest.close().catch(() => {})
    const stuck: string[] = []
    for (const dir of mounts.reverse()) {
      try {
        execFileSync('umount', [dir], { stdio: 'pipe' })
      } catch {
        // Detached now, freed when the last file on it closes.
        try {
          execFileSync('umount', ['-l', dir], { stdio: 'pipe' })
        } catch {
          stuck.push(dir)
        }
      }
    }
    await source?.close()
    await plcDir?.close()
    if (base && stuck.length === 0) await rm(base, { recursive: true, force: true })
    if (stuck.length > 0) throw new Error(`could not unmount ${stuck.join(', ')}`)
  })

  describe('the whole data directory on a 2 MiB tmpfs', () => {
    let dir: string
    let alice: FixtureAccount
    let counting: ReturnType<typeof countingClient>
    let failedId: string
    let second: DestinationServer
    let recoverOnFullDisk: unknown

    it('fails named LocalStorage, shows it though the store cannot write, and a restart does not resume it as if fine', async () => {
      // ~1 MB of repo CAR, staged then copied in (twice that in the WAL), plus 3 MB of blobs.
      alice = await account(5000)
      dir = join(base, 'whole')
      await mkdir(dir)
      mount(dir, '2m')
      const dest = await destination(dir)
      counting = countingClient(
        source.url,
        source.auth.issue({ did: alice.did, clientId: dest.clientId }, SCOPES),
      )

      const started = await dest.engine.start({ did: alice.did, client: counting.client })
      failedId = started.transferId
      // Recording the failure must not throw: `wait` resolves with it.
      const t = await dest.engine.wait(failedId)
      expectLocalStorage(t)
      expectLocalStorage(await dest.engine.get(failedId))
      expect(t.retry).toBeUndefined()
      expect(counting.exports()).toBe(1)
      // The disk stayed full (the repo staging is what filled it), so the store could not take
      // the failure: the engine's fallback is what shows it.
      const stored = await dest.transfers.get(failedId)
      expect(stored?.status).not.toBe('failed')
      expect(await dest.sink.isActive(alice.did)).toBe(false)
      expect(dest.store.db.prepare('SELECT 1 FROM repo_root WHERE did = ?').get(alice.did)).toBeUndefined()
      const df = execFileSync('df', ['-k', '--output=avail', dir])
        .toString()
        .trim()
        .split('\n')
        .at(-1)
        ?.trim()
      console.info(`whole dir, 2 MiB tmpfs: failed at ${stored?.status}/${stored?.stage}, ${df} KiB left`)

      // Restarted on the still-full disk, with a client to resume with: the transfer must not
      // come back as a running import; it ends failed, named, and the source is not asked again.
      await closeDest(dest)
      second = await destination(dir, counting.client)
      recoverOnFullDisk = await second.engine.recover().then(
        () => undefined,
        (err: unknown) => err,
      )
      const after = await second.engine.wait(failedId)
      expectLocalStorage(after)
      expect(counting.exports()).toBe(1)
      expect(await second.sink.isActive(alice.did)).toBe(false)
    }, 120_000)

    // One record that cannot be written must not make `recover()` reject (it would skip every
    // transfer after it, and a PDS awaiting it at start-up would not start).
    it('recover() resolves on a full disk', () => {
      expect(failedId).toBeDefined()
      expect(recoverOnFullDisk).toBeUndefined()
    })

    // A failure only shown (the disk was full) is stored once there is room, before the store's
    // one-per-DID rule judges the user's retry; otherwise the retry is "already being imported".
    it("after space is freed, the user's retry is accepted and imports the account byte-identical", async () => {
      expect(second).toBeDefined()
      grow(dir)
      const retry = await second.engine.start({ did: alice.did, client: counting.client })
      const done = await second.engine.wait(retry.transferId)
      expect(done.failure).toBeUndefined()
      expect(done).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
      expect(counting.exports()).toBe(2)
      await expectIdentical(second, alice)
      expectLocalStorage(await second.engine.get(failedId))
    }, 60_000)
  })

  it('only the blob directory full: LocalStorage, not retried, no temp files; after freeing space the retry is identical', async () => {
    const bob = await account(20)
    const dir = join(base, 'blobs-only')
    const blobDir = join(dir, 'blobs')
    await mkdir(blobDir, { recursive: true })
    // Room for about three of the ten 300 kB blobs; the databases stay on the ordinary disk.
    mount(blobDir, '1m')
    const dest = await destination(dir)
    const counting = countingClient(
      source.url,
      source.auth.issue({ did: bob.did, clientId: dest.clientId }, SCOPES),
    )

    const started = await dest.engine.start({ did: bob.did, client: counting.client })
    const t = await dest.engine.wait(started.transferId)
    expectLocalStorage(t)
    expect(t.failure?.message).toMatch(/ENOSPC/)
    // Not the source's fault: one export session, no retry scheduled.
    expect(counting.exports()).toBe(1)
    expect(t.retry).toBeUndefined()
    // Here the store could write: the failure is durable, not only shown.
    expectLocalStorage(await dest.transfers.get(started.transferId))
    expect(await incoming(blobDir)).toEqual([])
    // What landed before ENOSPC is whole and recorded: every file is a committed blob.
    const landed = await readdir(blobDir)
    expect(landed.length).toBeGreaterThan(0)
    expect(landed.length).toBeLessThan(BLOB_SIZES.length)
    let bytes = 0
    for (const cid of landed) {
      const file = await readFile(join(blobDir, cid))
      expect(file.equals(Buffer.from(bob.blobs.get(cid) as Uint8Array))).toBe(true)
      expect(await dest.sink.hasBlob(bob.did, cid)).toBe(true)
      bytes += file.length
    }
    console.info(
      `blob dir, 1 MiB tmpfs: ${landed.length}/${BLOB_SIZES.length} blobs (${bytes} bytes) landed before ENOSPC; ` +
        `${t.progress.blobsReceived} counted, ${t.progress.bytesReceived} plaintext bytes`,
    )

    // Space freed: the user's retry (a new transfer) brings the rest, byte-identical.
    grow(blobDir)
    const retry = await dest.engine.start({ did: bob.did, client: counting.client })
    const done = await dest.engine.wait(retry.transferId)
    expect(done.failure).toBeUndefined()
    expect(done).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
    expect(counting.exports()).toBe(2)
    expect(await incoming(blobDir)).toEqual([])
    await expectIdentical(dest, bob)
    // The first transfer stays what it was: failed, named.
    expectLocalStorage(await dest.engine.get(started.transferId))
  }, 120_000)

  // Our disk filling during getBlob reconciliation is not "the source lacks these blobs": the user
  // must not be offered to move without them.
  it('a disk that fills during reconciliation fails LocalStorage, not "blobs missing"', async () => {
    // The export stream carries no blobs, so every one comes through getBlob.
    const bare = await startSourceServer({
      plc: plcDir,
      wrapSource: (store) => overrideSource(store, { listBlobs: async () => ({ blobs: [] }) }),
    })
    try {
      const carol = await buildAccount(bare.store, {
        plcUrl: plcDir.url,
        pdsUrl: bare.url,
        pdsRotationKey: bare.rotationKey,
        shape: { posts: 20, blobSizes: BLOB_SIZES },
      })
      const dir = join(base, 'reconcile')
      const blobDir = join(dir, 'blobs')
      await mkdir(blobDir, { recursive: true })
      mount(blobDir, '1m')
      const dest = await destination(dir)
      const token = bare.auth.issue({ did: carol.did, clientId: dest.clientId }, SCOPES)
      const started = await dest.engine.start({ did: carol.did, client: bearerSourceClient(bare.url, token) })
      const t = await dest.engine.wait(started.transferId)
      expect(await incoming(blobDir)).toEqual([])
      expectLocalStorage(t)
    } finally {
      await bare.close()
    }
  })
})
