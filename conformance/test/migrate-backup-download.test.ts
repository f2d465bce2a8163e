import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { text } from 'node:stream/consumers'
import { verifyRepoCar } from '@atproto/repo'
import { accountZip } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { collect, unzip } from '../src/harness/unzip.ts'

/**
 * Issue 18, item 10: the checklist's backup is the whole public account as one zip in the
 * plain-export layout, read from the current server: the repo as the PDS serves it, every
 * image checked against its CID, a README saying what is in it, what is not and how to restore.
 */
describe("the checklist's backup download", () => {
  let plc: PlcDirectory
  let pds: Awaited<ReturnType<typeof startPlainPds>>
  let dataDir: string
  let alice: SeededAccount
  let lost: string

  beforeAll(async () => {
    plc = await startPlcDirectory()
    dataDir = await mkdtemp(join(tmpdir(), 'backup-download-'))
    pds = await startPlainPds(plc.namedUrl, { dataDir })
    alice = await seedReferenceAccount(pds.url, {
      handle: 'zipdownload.test',
      email: 'zipdownload@example.com',
      password: 'downloads-password',
      posts: 30,
      images: 4,
      follows: 3,
    })
    lost = [...alice.blobs.keys()][1] as string
    await rm(join(dataDir, 'blobs', alice.did, lost))
  }, 180_000)
  afterAll(async () => {
    await pds?.close()
    await plc?.close()
    if (dataDir) await rm(dataDir, { recursive: true, force: true })
  })

  it('holds the repo, every image the server can send, and a README naming the one it could not', async () => {
    const zip = accountZip({
      source: pds.url,
      did: alice.did,
      handle: alice.handle,
      madeBy: 'b.example',
      now: new Date('2026-12-03T10:00:00Z'),
    })
    expect(zip.fileName).toBe('zipdownload.test-2026-12-03.zip')
    const entries = await unzip(await collect(zip.stream))
    const repo = await verifyRepoCar(new Uint8Array(entries.get('repo.car') as Buffer), alice.did)
    expect(repo.creates.length).toBeGreaterThanOrEqual(30)
    const blobs = [...entries.keys()].filter((n) => n.startsWith('blobs/'))
    expect(blobs.sort()).toEqual(
      [...alice.blobs.keys()]
        .filter((c) => c !== lost)
        .map((c) => `blobs/${c}`)
        .sort(),
    )
    for (const name of blobs)
      expect(entries.get(name)?.equals(alice.blobs.get(name.slice(6)) as Uint8Array), name).toBe(true)
    const readme = entries.get('README.txt')?.toString('utf8') ?? ''
    expect(readme).toMatch(/^Backup of zipdownload\.test \(did:plc:/)
    expect(readme).toMatch(/3 file\(s\), each named by its content ID/)
    expect(readme).toMatch(new RegExp(`NOT INCLUDED: 1 file\\(s\\) your server could not send:\\n  ${lost}`))
    expect(readme).toMatch(/To restore: .* go to \/recover .*upload this zip/s)
    expect(readme).toMatch(/import repo\.car/)
  })

  it('is cut off, not completed, when an image does not match its CID', async () => {
    const victim = [...alice.blobs.keys()][0] as string
    const tampering: typeof fetch = async (input, init) => {
      const res = await fetch(input, init)
      if (!String(input).includes(`cid=${victim}`)) return res
      const bytes = new Uint8Array(await res.arrayBuffer())
      bytes[10] = (bytes[10] as number) ^ 1
      return new Response(bytes, { status: 200, headers: res.headers })
    }
    const zip = accountZip({ source: pds.url, did: alice.did, madeBy: 'b.example', fetch: tampering })
    await expect(text(zip.stream as NodeJS.ReadableStream & AsyncIterable<Buffer>)).rejects.toThrow(
      `blob ${victim}: the bytes received do not hash to its CID`,
    )
  })
})
