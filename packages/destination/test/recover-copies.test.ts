import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { InboundTransfer } from '../src/inbound-transfer.ts'
import { RecoverCopies, UploadRefused } from '../src/recover-copies.ts'

/** Whether a tmpfs can be mounted here (root), for the full-disk case: a real full disk, not a mock. */
function canMount(): boolean {
  try {
    execFileSync('mount', ['--version'], { stdio: 'pipe' })
    return process.getuid?.() === 0
  } catch {
    return false
  }
}

describe('RecoverCopies', () => {
  let dir: string
  let uploads: RecoverCopies
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'recover-uploads-'))
    uploads = new RecoverCopies(dir, 1024)
  })
  afterEach(() => rm(dir, { recursive: true, force: true }))

  const transfer = (id: string, fields: Partial<InboundTransfer>): InboundTransfer =>
    ({
      transferId: id,
      did: 'did:plc:x',
      status: 'importing',
      updatedAt: Date.now(),
      ...fields,
    }) as InboundTransfer

  it('keeps a whole file under the hash of its bytes, and nothing of a cut, empty or oversized one', async () => {
    const kept = await uploads.save(Readable.from([Buffer.from('zip bytes')]), () => false)
    expect(kept.source).toBe(`upload:${createHash('sha256').update('zip bytes').digest('hex')}`)
    expect(kept).toMatchObject({ bytes: 9 })
    await expect(uploads.save(Readable.from([Buffer.alloc(0)]), () => false)).rejects.toThrow(
      /choose the file/,
    )
    await expect(uploads.save(Readable.from([Buffer.alloc(10)]), () => true)).rejects.toThrow(/larger than/)
    const cut = new Readable({
      read() {
        this.push(Buffer.alloc(5))
        this.destroy(new Error('connection reset'))
      },
    })
    await expect(uploads.save(cut, () => false)).rejects.toBeInstanceOf(UploadRefused)
    expect(await readdir(dir)).toEqual([kept.path.split('/').at(-1)])
  })

  it.skipIf(!canMount())('keeps nothing of an upload that fills the disk, and says so', async () => {
    const small = join(dir, 'small')
    await mkdir(small)
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', small], { stdio: 'pipe' })
    try {
      const full = new RecoverCopies(join(small, 'uploads'))
      const big = Readable.from(Array.from({ length: 32 }, () => Buffer.alloc(16 * 1024, 1)))
      await expect(full.save(big, () => false)).rejects.toThrow(/no room for the file/)
      expect(await readdir(join(small, 'uploads'))).toEqual([])
    } finally {
      execFileSync('umount', [small], { stdio: 'pipe' })
    }
  })

  it('sweeps what no unfinished restore reads, and keeps a failed one for its retry', async () => {
    const names: Record<string, string> = {}
    const records = new Map<string, InboundTransfer>()
    for (const [id, record] of [
      ['running', transfer('running', { status: 'importing' })],
      ['done', transfer('done', { status: 'completed' })],
      [
        'cancelled',
        transfer('cancelled', { status: 'failed', failure: { reason: 'Cancelled', message: '' } }),
      ],
      [
        'failed-now',
        transfer('failed-now', { status: 'failed', failure: { reason: 'StreamCut', message: '' } }),
      ],
      [
        'failed-long-ago',
        transfer('failed-long-ago', {
          status: 'failed',
          failure: { reason: 'StreamCut', message: '' },
          updatedAt: Date.now() - 73 * 3600_000,
        }),
      ],
    ] as const) {
      const kept = await uploads.save(Readable.from([Buffer.from(id)]), () => false)
      await writeFile(`${kept.path}.json`, JSON.stringify({ transferId: id }))
      names[id] = kept.path.split('/').at(-1) as string
      records.set(id, record)
    }
    // Taken up by no restore: kept an hour (the proof passed, then the server stopped), then gone.
    const orphan = await uploads.save(Readable.from([Buffer.from('orphan')]), () => false)
    const stale = await uploads.save(Readable.from([Buffer.from('stale')]), () => false)
    const old = new Date(Date.now() - 2 * 3600_000)
    await utimes(stale.path, old, old)

    expect(await uploads.sweep(async (id) => records.get(id))).toBe(4)
    const left = await readdir(dir)
    expect(left.sort()).toEqual(
      [
        names.running,
        `${names.running}.json`,
        names['failed-now'],
        `${names['failed-now']}.json`,
        orphan.path.split('/').at(-1),
      ].sort(),
    )
  })

  it('discards an upload no restore took up, never one a restore reads', async () => {
    const kept = await uploads.save(Readable.from([Buffer.from('same')]), () => false)
    await writeFile(`${kept.path}.json`, JSON.stringify({ transferId: 't' }))
    await uploads.discard(kept.source)
    expect(await readdir(dir)).toHaveLength(2)
    const loose = await uploads.save(Readable.from([Buffer.from('loose')]), () => false)
    await uploads.discard(loose.source)
    expect(await readdir(dir)).toHaveLength(2)
    await expect(uploads.discard('upload:../../etc/passwd')).rejects.toThrow(/does not name an uploaded copy/)
  })

  it('gives a restarted engine the upload only for restores of uploads', async () => {
    expect(
      await uploads.restoreClient(transfer('a', { sourceUrl: 'https://backups.example.com' })),
    ).toBeUndefined()
    // The file is gone (swept, or the disk was replaced): the restore cannot resume, and says so upstream.
    expect(
      await uploads.restoreClient(transfer('b', { sourceUrl: `upload:${'0'.repeat(64)}` })),
    ).toBeUndefined()
  })
})
