import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseCid } from '@atproto/lex-data'
import { DiskBlobStore } from '@atproto/pds'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { DiskBlobUpload } from '../src/disk-blob-upload.ts'
import { WriteBudget } from '../src/write-budget.ts'

const CID = parseCid('bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku')

describe('DiskBlobUpload', () => {
  let dir: string
  let store: DiskBlobStore
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'disk-blob-upload-'))
    store = DiskBlobStore.creator(join(dir, 'blobs'))('did:plc:testaccount')
  })
  afterEach(() => rm(dir, { recursive: true, force: true }))

  /** Writes `bytes` in chunks of uneven sizes, as decrypted network chunks arrive. */
  async function writeInChunks(upload: DiskBlobUpload, bytes: Buffer): Promise<void> {
    const sizes = [1, 65_536, 16_384, 1_500_000, 7]
    for (let offset = 0, i = 0; offset < bytes.length; i++) {
      const n = sizes[i % sizes.length] as number
      await upload.write(bytes.subarray(offset, offset + n))
      offset += n
    }
  }

  for (const [name, declared] of [
    ['declared size', 2_621_447],
    ['unknown size', -1],
  ] as const) {
    it(`stores the exact bytes at the permanent path (${name}, several write batches)`, async () => {
      const bytes = randomBytes(2_621_447)
      const upload = DiskBlobUpload.start(store, CID, declared, new WriteBudget(4 << 20))
      await writeInChunks(upload, bytes)
      expect(upload.size).toBe(bytes.length)
      await upload.commit()
      expect(Buffer.compare(await readFile(store.getStoredPath(CID)), bytes)).toBe(0)
      expect(await readdir(join(dir, 'blobs', 'tempt', 'did:plc:testaccount'))).toEqual([])
    })
  }

  it('copies what it is given: a caller may reuse its chunk once write resolves', async () => {
    const chunk = Buffer.alloc(1000, 1)
    const upload = DiskBlobUpload.start(store, CID, 2000, new WriteBudget(4 << 20))
    await upload.write(chunk)
    chunk.fill(2)
    await upload.write(chunk)
    await upload.commit()
    const stored = await readFile(store.getStoredPath(CID))
    expect([stored[0], stored[1999]]).toEqual([1, 2])
  })

  it('abort leaves nothing behind', async () => {
    const upload = DiskBlobUpload.start(store, CID, 10, new WriteBudget(4 << 20))
    await upload.write(Buffer.alloc(5))
    await upload.abort()
    expect(await store.hasStored(CID)).toBe(false)
    expect(await readdir(join(dir, 'blobs', 'tempt', 'did:plc:testaccount'))).toEqual([])
  })

  it('queues writes in the background within the budget, and returns it all once committed', async () => {
    const budget = new WriteBudget(1 << 20)
    let peak = 0
    const reserve = budget.reserve.bind(budget)
    budget.reserve = async (bytes) => {
      await reserve(bytes)
      peak = Math.max(peak, budget.inFlight)
    }
    const bytes = randomBytes(5_000_000)
    const upload = DiskBlobUpload.start(store, CID, bytes.length, budget)
    await writeInChunks(upload, bytes)
    await upload.commit()
    expect(peak).toBeGreaterThan(0)
    expect(peak).toBeLessThanOrEqual(1 << 20)
    expect(budget.inFlight).toBe(0)
    expect(Buffer.compare(await readFile(store.getStoredPath(CID)), bytes)).toBe(0)
  })

  it('a disk failure in the background is thrown by commit, and abort still cleans up', async () => {
    // The temporary directory cannot be made: a file stands where it should be.
    await mkdir(join(dir, 'blobs'), { recursive: true })
    await writeFile(join(dir, 'blobs', 'tempt'), 'not a directory')
    const budget = new WriteBudget(1 << 20)
    const upload = DiskBlobUpload.start(store, CID, 10, budget)
    await upload.write(Buffer.alloc(10)).catch(() => undefined)
    await expect(upload.commit()).rejects.toMatchObject({ code: expect.stringMatching(/^E/) })
    await upload.abort()
    expect(await store.hasStored(CID)).toBe(false)
    expect(budget.inFlight).toBe(0)
  })

  it('refuses bytes beyond the declared size', async () => {
    const upload = DiskBlobUpload.start(store, CID, 4, new WriteBudget(1 << 20))
    await upload.write(Buffer.alloc(4))
    await expect(upload.write(Buffer.alloc(1))).rejects.toThrow(/longer than the 4 bytes declared/)
    await upload.abort()
    expect(await readdir(join(dir, 'blobs', 'tempt', 'did:plc:testaccount'))).toEqual([])
  })
})
