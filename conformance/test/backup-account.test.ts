import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AtpAgent } from '@atproto/api'
import { verifyRepoCar } from '@atproto/repo'
import {
  AccountArchive,
  type ArchiveKeys,
  FsArchiveStore,
  generateArchiveKeys,
  parseArchiveKeys,
  writerKeys,
} from '@pds-transfer/archive'
import { backupAccount, backupReadApi, exportPlain, runBackupCli } from '@pds-transfer/backup'
import { PlcDidResolver } from '@pds-transfer/destination'
import Fastify from 'fastify'
import S3rver from 's3rver'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fixtureBytes } from '../src/fixtures/build-account.ts'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'

/** Requests and response bytes of what a run asked the PDS, by XRPC method. */
function countingFetch() {
  const calls = new Map<string, number>()
  const counted: typeof fetch = async (input, init) => {
    const nsid = new URL(String(input)).pathname.replace('/xrpc/', '')
    calls.set(nsid, (calls.get(nsid) ?? 0) + 1)
    return fetch(input, init)
  }
  return { fetch: counted, calls }
}

/**
 * Issue 20: backups of an account on a plain reference PDS (nothing of ours installed), over the
 * public sync endpoints: the first run takes everything, verified; an unchanged account costs one
 * getLatestCommit; after posts, a delete and a new image the next run fetches a getRepo?since
 * diff and only the new blob; the archive exports to plain files that @atproto/repo's own
 * verifier accepts, every blob byte-identical to what the PDS serves.
 */
describe('backups of an account on a plain PDS', () => {
  let plc: PlcDirectory
  let pds: Awaited<ReturnType<typeof startPlainPds>>
  let work: string
  let alice: SeededAccount
  let agent: AtpAgent

  beforeAll(async () => {
    plc = await startPlcDirectory()
    pds = await startPlainPds(plc.namedUrl)
    work = await mkdtemp(join(tmpdir(), 'backup-test-'))
    alice = await seedReferenceAccount(pds.url, {
      handle: 'backedup.test',
      email: 'backedup@example.com',
      password: 'backed-up-password',
      posts: 300,
      images: 4,
      follows: 5,
    })
    agent = new AtpAgent({ service: pds.url })
    await agent.login({ identifier: alice.handle, password: alice.password })
  }, 180_000)
  afterAll(async () => {
    await pds?.close()
    await plc?.close()
    if (work) await rm(work, { recursive: true, force: true })
  })

  function archiveOf(keys: ArchiveKeys, name: string) {
    return new AccountArchive(new FsArchiveStore(join(work, name)), keys, alice.did)
  }
  const resolver = () => new PlcDidResolver(plc.url)

  async function pdsRepo() {
    const res = await fetch(`${pds.url}/xrpc/com.atproto.sync.getRepo?did=${alice.did}`)
    return new Uint8Array(await res.arrayBuffer())
  }

  it('backs up everything, then nothing when unchanged, then only the change', async () => {
    const keys = await generateArchiveKeys()
    const archive = archiveOf(keys, 'full-key')
    const first = await backupAccount(alice.did, { archive, resolver: resolver(), workDir: work })
    expect(first.unchanged).toBe(false)
    expect(first.manifest.repo.kind).toBe('full')
    expect(first.fetched.blobs).toBe(4)
    expect(first.missing).toEqual([])
    expect(first.manifest.blobCount).toBe(4)

    const quiet = countingFetch()
    const second = await backupAccount(alice.did, {
      archive,
      resolver: resolver(),
      workDir: work,
      fetch: quiet.fetch,
    })
    expect(second.unchanged).toBe(true)
    expect(Object.fromEntries(quiet.calls)).toEqual({ 'com.atproto.sync.getLatestCommit': 1 })
    expect(second.fetched).toEqual({ repoBytes: 0, blobs: 0, blobBytes: 0 })

    // Two posts (one with a new image); the oldest post (the seed's first image post) deleted.
    const image = fixtureBytes(50_000, 77)
    const uploaded = await agent.uploadBlob(image, { encoding: 'image/png' })
    await agent.post({ text: 'after the first backup', createdAt: new Date().toISOString() })
    await agent.post({
      text: 'with a new image',
      createdAt: new Date().toISOString(),
      embed: { $type: 'app.bsky.embed.images', images: [{ image: uploaded.data.blob, alt: 'new' }] },
    })
    const posts = await agent.com.atproto.repo.listRecords({
      repo: alice.did,
      collection: 'app.bsky.feed.post',
      limit: 1,
      reverse: true,
    })
    await agent.com.atproto.repo.deleteRecord({
      repo: alice.did,
      collection: 'app.bsky.feed.post',
      rkey: (posts.data.records[0]?.uri ?? '').split('/').pop() as string,
    })

    const changed = countingFetch()
    const third = await backupAccount(alice.did, {
      archive,
      resolver: resolver(),
      workDir: work,
      fetch: changed.fetch,
    })
    expect(third.manifest.repo.kind).toBe('diff')
    expect(third.manifest.repo.since).toBe(first.manifest.repo.rev)
    expect(Object.fromEntries(changed.calls)).toEqual({
      'com.atproto.sync.getLatestCommit': 1,
      'com.atproto.sync.getRepo': 1,
      'com.atproto.sync.getBlob': 1,
    })
    expect(third.fetched.blobs).toBe(1)
    expect(third.fetched.blobBytes).toBe(image.length)
    expect(third.fetched.repoBytes).toBeLessThan(first.fetched.repoBytes / 4)
    expect(third.manifest.blobCount).toBe(5)

    // The archive, exported: the repo at the PDS's head, verified by @atproto/repo; the blobs identical.
    const out = join(work, 'export')
    const exported = await exportPlain(archive, out, work)
    const ours = await verifyRepoCar(new Uint8Array(await readFile(join(out, 'repo.car'))), alice.did)
    const theirs = await verifyRepoCar(await pdsRepo(), alice.did)
    expect(ours.commit.rev).toBe(theirs.commit.rev)
    expect(ours.commit.cid.toString()).toBe(theirs.commit.cid.toString())
    const records = (r: typeof ours) => r.creates.map((c) => `${c.collection}/${c.rkey} ${c.cid}`).sort()
    expect(records(ours)).toEqual(records(theirs))
    // The deleted post's image stays in the archive (blobCount 5) but is no longer the repo's.
    expect(exported).toMatchObject({ rev: theirs.commit.rev, blobs: 4, missingBlobs: [], preferences: false })
    for (const cid of await readdir(join(out, 'blobs'))) {
      const served = await fetch(`${pds.url}/xrpc/com.atproto.sync.getBlob?did=${alice.did}&cid=${cid}`)
      expect(
        Buffer.from(await served.arrayBuffer()).equals(await readFile(join(out, 'blobs', cid))),
        cid,
      ).toBe(true)
    }
    expect(await archive.verify({ deep: true })).toMatchObject({ manifests: 3, problems: [] })
  })

  it('a writer that cannot read the archive still backs up, fetching the repo whole each time it moved', async () => {
    const keys = await generateArchiveKeys()
    const writer = archiveOf(writerKeys(keys), 'writer-key')
    await backupAccount(alice.did, { archive: writer, resolver: resolver(), workDir: work })
    await agent.post({ text: 'while a writer backs up', createdAt: new Date().toISOString() })
    const next = await backupAccount(alice.did, { archive: writer, resolver: resolver(), workDir: work })
    expect(next.manifest.repo.kind).toBe('full')
    expect(next.fetched.blobs).toBe(0)
    expect((await writer.verify()).problems).toEqual([])
    // Only the holder of the whole key can read it.
    await expect(exportPlain(writer, join(work, 'writer-export'), work)).rejects.toThrow(/cannot decrypt/)
    const reader = archiveOf(keys, 'writer-key')
    const exported = await exportPlain(reader, join(work, 'reader-export'), work)
    expect(exported.rev).toBe(next.manifest.repo.rev)
  })

  /** The CLI in-process, its output kept. */
  async function cli(...argv: string[]) {
    const out: string[] = []
    const err: string[] = []
    const code = await runBackupCli([...argv, '--plc', plc.url, '--work', work], {
      out: (t) => out.push(t),
      err: (t) => err.push(t),
    })
    return { code, out: out.join('\n'), err: err.join('') }
  }

  it('the CLI: keygen, run, status, verify (and a change at rest found), export', async () => {
    const key = join(work, 'cli-key.json')
    const writer = join(work, 'cli-writer.json')
    const dir = join(work, 'cli-archive')
    expect((await cli('keygen', '--out', key, '--writer', writer)).code).toBe(0)
    const run = await cli('run', alice.did, '--archive', dir, '--key', writer)
    expect(run.code, run.err).toBe(0)
    expect(run.out).toMatch(new RegExp(`${alice.did}: rev \\w+ \\(whole repo, \\d+ records\\), 4 new blobs`))
    const again = await cli('run', alice.did, '--archive', dir, '--key', writer)
    expect(again.out).toMatch(/unchanged since/)
    const status = await cli('status', alice.did, '--archive', dir, '--key', writer)
    expect(status.out).toMatch(/blobs {9}4 held/)
    expect(status.out).toMatch(/stored .* in 2 runs/)
    expect((await cli('verify', alice.did, '--archive', dir, '--key', writer, '--deep')).err).toMatch(
      /cannot decrypt/,
    )
    expect((await cli('verify', alice.did, '--archive', dir, '--key', key, '--deep')).out).toMatch(
      /^intact: 2 manifests, 5 objects/,
    )

    const blobDir = join(dir, alice.did, 'blobs')
    const [first] = await readdir(blobDir)
    const path = join(blobDir, first as string)
    const original = await readFile(path)
    await writeFile(path, Buffer.concat([original, Buffer.from([0])]))
    const tampered = await cli('verify', alice.did, '--archive', dir, '--key', writer)
    expect(tampered.code).toBe(1)
    expect(tampered.out).toMatch(
      /PROBLEM .*blobs\/.*: the stored bytes differ from what the manifest recorded/,
    )
    const unreadable = await cli(
      'export',
      alice.did,
      '--archive',
      dir,
      '--key',
      key,
      '--out',
      join(work, 'cli-export-bad'),
    )
    expect(unreadable.code).toBe(1)
    expect(unreadable.err).toMatch(/error: .*(changed at rest|ObjectCorrupt|differ)/)
    await writeFile(path, original)

    const exported = await cli(
      'export',
      alice.did,
      '--archive',
      dir,
      '--key',
      key,
      '--out',
      join(work, 'cli-export'),
    )
    expect(exported.code, exported.err).toBe(0)
    expect(exported.out).toMatch(/repo\.car \(\d+ records\), 4 blobs/)
    expect((await cli('run', 'not-a-did', '--archive', dir, '--key', key)).code).toBe(2)

    // serve: the operator reads the backup over the sync endpoints until the server is stopped.
    process.env.PDS_BACKUP_OPERATOR_TOKEN = 'cli-operator'
    const stop = new AbortController()
    let served: unknown
    const serving = runBackupCli(
      [
        'serve',
        '--archive',
        dir,
        '--key',
        key,
        '--port',
        '0',
        '--service-did',
        'did:web:backups.test',
        '--plc',
        plc.url,
        '--work',
        work,
      ],
      { out: () => {}, err: () => {} },
      {
        signal: stop.signal,
        onListening: async (url) => {
          const res = await fetch(`${url}/xrpc/com.atproto.sync.getRepoStatus?did=${alice.did}`, {
            headers: { authorization: 'Bearer cli-operator' },
          })
          served = await res.json()
          stop.abort()
        },
      },
    )
    expect(await serving).toBe(0)
    delete process.env.PDS_BACKUP_OPERATOR_TOKEN
    expect(served).toMatchObject({ did: alice.did, active: true })
  })

  it('backs up every account of a PDS with one command', async () => {
    const n = 100
    for (let i = 0; i < n; i++) {
      await seedReferenceAccount(pds.url, {
        handle: `many${i}.test`,
        email: `many${i}@example.com`,
        password: `many-password-${i}`,
        posts: 3,
        images: i % 10 === 0 ? 1 : 0,
        follows: 1,
      })
    }
    const key = join(work, 'many-key.json')
    await cli('keygen', '--out', key)
    const started = Date.now()
    const run = await cli('run', '--pds', pds.url, '--all', '--archive', join(work, 'many'), '--key', key)
    expect(run.code, run.err).toBe(0)
    // The accounts seeded here, the one of the other tests, none failed.
    expect(run.out).toMatch(new RegExp(`^${n + 1} of ${n + 1} accounts backed up$`, 'm'))
    console.log(`backed up ${n + 1} accounts in ${Date.now() - started} ms`)
  }, 300_000)

  it('serves a backup over the sync endpoints, to its account or the operator only', async () => {
    const keys = await generateArchiveKeys()
    const dir = join(work, 'served')
    const archive = new AccountArchive(new FsArchiveStore(dir), keys, alice.did)
    await backupAccount(alice.did, { archive, resolver: resolver(), workDir: work })
    const serviceDid = 'did:web:backups.example.com'
    const app = Fastify()
    await app.register(backupReadApi, {
      store: new FsArchiveStore(dir),
      keys,
      resolver: resolver(),
      serviceDid,
      operatorToken: 'operator-secret',
      workDir: work,
    })
    const url = await app.listen({ port: 0, host: '127.0.0.1' })
    try {
      const get = (path: string, token?: string) =>
        fetch(`${url}/xrpc/${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} })
      const serviceAuth = async (lxm: string, aud = serviceDid) =>
        (await agent.com.atproto.server.getServiceAuth({ aud, lxm })).data.token

      // The account's own token, minted by its PDS for this method and this service.
      const head = await get(
        `com.atproto.sync.getLatestCommit?did=${alice.did}`,
        await serviceAuth('com.atproto.sync.getLatestCommit'),
      )
      expect(await head.json()).toEqual({
        cid: archive && (await archive.load()).latest?.repo.commitCid,
        rev: (await archive.load()).latest?.repo.rev,
      })
      const car = await get(
        `com.atproto.sync.getRepo?did=${alice.did}`,
        await serviceAuth('com.atproto.sync.getRepo'),
      )
      expect(car.headers.get('content-type')).toBe('application/vnd.ipld.car')
      const served = await verifyRepoCar(new Uint8Array(await car.arrayBuffer()), alice.did)
      const live = await verifyRepoCar(await pdsRepo(), alice.did)
      expect(served.commit.cid.toString()).toBe(live.commit.cid.toString())
      const listed = (await (
        await get(`com.atproto.sync.listBlobs?did=${alice.did}&limit=2`, 'operator-secret')
      ).json()) as { cids: string[]; cursor?: string }
      expect(listed.cids).toHaveLength(2)
      const rest = (await (
        await get(`com.atproto.sync.listBlobs?did=${alice.did}&cursor=${listed.cursor}`, 'operator-secret')
      ).json()) as { cids: string[] }
      const all = [...listed.cids, ...rest.cids]
      expect(all.length).toBe((await archive.load()).blobs.size)
      for (const cid of all) {
        const ours = await get(`com.atproto.sync.getBlob?did=${alice.did}&cid=${cid}`, 'operator-secret')
        const theirs = await fetch(`${pds.url}/xrpc/com.atproto.sync.getBlob?did=${alice.did}&cid=${cid}`)
        expect(
          Buffer.from(await ours.arrayBuffer()).equals(Buffer.from(await theirs.arrayBuffer())),
          cid,
        ).toBe(true)
      }

      // Refusals, each named.
      const refusal = async (res: Response) => ({
        status: res.status,
        error: ((await res.json()) as { error: string }).error,
      })
      expect(await refusal(await get(`com.atproto.sync.getRepo?did=${alice.did}`))).toEqual({
        status: 401,
        error: 'AuthenticationRequired',
      })
      expect(
        await refusal(
          await get(
            `com.atproto.sync.getRepo?did=${alice.did}`,
            await serviceAuth('com.atproto.sync.getBlob'),
          ),
        ),
      ).toEqual({
        status: 401,
        error: 'BadJwtLexiconMethod',
      })
      expect(
        await refusal(
          await get(
            `com.atproto.sync.getRepo?did=${alice.did}`,
            await serviceAuth('com.atproto.sync.getRepo', 'did:web:other.example.com'),
          ),
        ),
      ).toEqual({
        status: 401,
        error: 'BadJwtAudience',
      })
      expect(
        await refusal(
          await get(
            `com.atproto.sync.getRepo?did=did:plc:someoneelse`,
            await serviceAuth('com.atproto.sync.getRepo'),
          ),
        ),
      ).toEqual({
        status: 401,
        error: 'InvalidToken',
      })
      expect(
        await refusal(await get(`com.atproto.sync.getRepo?did=did:plc:someoneelse`, 'operator-secret')),
      ).toEqual({ status: 400, error: 'RepoNotFound' })
      expect(
        await refusal(
          await get(`com.atproto.sync.getBlob?did=${alice.did}&cid=bafkreinothere`, 'operator-secret'),
        ),
      ).toEqual({ status: 400, error: 'BlobNotFound' })
      expect(await refusal(await get(`com.atproto.sync.getRepo?did=${alice.did}`, 'wrong-secret'))).toEqual({
        status: 401,
        error: 'InvalidToken',
      })
    } finally {
      await app.close()
    }
  })

  it('backs up into an S3-compatible bucket (s3rver) with the CLI, incrementally, and verifies there', async () => {
    const dir = await mkdtemp(join(work, 's3rver-'))
    const server = new S3rver({
      port: 0,
      address: '127.0.0.1',
      silent: true,
      directory: dir,
      configureBuckets: [{ name: 'backups' }],
    })
    const { port } = await server.run()
    const env = { ...process.env }
    Object.assign(process.env, {
      PDS_BACKUP_S3_ENDPOINT: `http://127.0.0.1:${port}`,
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
      AWS_REGION: 'us-east-1',
    })
    try {
      const key = join(work, 's3-key.json')
      await cli('keygen', '--out', key)
      const first = await cli('run', alice.did, '--archive', 's3://backups/daily', '--key', key)
      expect(first.code, first.err).toBe(0)
      expect(first.out).toMatch(/whole repo/)
      await agent.post({ text: 'between two S3 backups', createdAt: new Date().toISOString() })
      const second = await cli('run', alice.did, '--archive', 's3://backups/daily', '--key', key)
      expect(second.out).toMatch(/diff since/)
      const verified = await cli(
        'verify',
        alice.did,
        '--archive',
        's3://backups/daily',
        '--key',
        key,
        '--deep',
      )
      expect(verified.out).toMatch(/^intact: 2 manifests/)
      const exported = await cli(
        'export',
        alice.did,
        '--archive',
        's3://backups/daily',
        '--key',
        key,
        '--out',
        join(work, 's3-export'),
      )
      expect(exported.code, exported.err).toBe(0)
      const live = await verifyRepoCar(await pdsRepo(), alice.did)
      const ours = await verifyRepoCar(
        new Uint8Array(await readFile(join(work, 's3-export', 'repo.car'))),
        alice.did,
      )
      expect(ours.commit.cid.toString()).toBe(live.commit.cid.toString())
    } finally {
      process.env = env
      await new Promise((resolve) => server.close(resolve))
    }
  })

  it('with an app password, the preferences too (pds-backup run, then export prefs.json)', async () => {
    const { data } = await agent.com.atproto.server.createAppPassword({ name: 'backups' })
    const key = join(work, 'prefs-key.json')
    await cli('keygen', '--out', key)
    process.env.PDS_BACKUP_APP_PASSWORD = data.password
    try {
      const run = await cli('run', alice.did, '--archive', join(work, 'prefs'), '--key', key)
      expect(run.code, run.err).toBe(0)
      expect(run.out).toMatch(/preferences included/)
    } finally {
      delete process.env.PDS_BACKUP_APP_PASSWORD
    }
    expect((await cli('status', alice.did, '--archive', join(work, 'prefs'), '--key', key)).out).toMatch(
      /preferences {3}backed up/,
    )
    const out = join(work, 'prefs-export')
    expect(
      (await cli('export', alice.did, '--archive', join(work, 'prefs'), '--key', key, '--out', out)).out,
    ).toMatch(/prefs\.json/)
    const live = (await agent.app.bsky.actor.getPreferences()).data.preferences
    const exported = JSON.parse(await readFile(join(out, 'prefs.json'), 'utf8')) as { preferences: unknown[] }
    expect(exported.preferences.length).toBeGreaterThan(0)
    expect(exported.preferences).toEqual(
      live.filter((p) => p.$type !== 'app.bsky.actor.defs#declaredAgePref'),
    )
    // The read API serves them as a PDS would (the account by its did), and the email; an
    // archive made without the sign-in says it has no preferences instead of an empty list.
    const app = Fastify()
    await app.register(backupReadApi, {
      store: new FsArchiveStore(join(work, 'prefs')),
      keys: parseArchiveKeys(JSON.parse(await readFile(key, 'utf8'))),
      resolver: resolver(),
      serviceDid: 'did:web:backups.example.com',
      operatorToken: 'operator-secret',
      workDir: work,
    })
    const url = await app.listen({ port: 0, host: '127.0.0.1' })
    try {
      const read = async (path: string) =>
        (await fetch(`${url}/xrpc/${path}`, { headers: { authorization: 'Bearer operator-secret' } })).json()
      expect(await read(`app.bsky.actor.getPreferences?did=${alice.did}`)).toEqual({
        preferences: exported.preferences,
      })
      const session = (await agent.com.atproto.server.getSession()).data
      expect(await read(`com.atproto.server.getSession?did=${alice.did}`)).toEqual({
        did: alice.did,
        email: session.email,
        emailConfirmed: session.emailConfirmed ?? false,
      })
    } finally {
      await app.close()
    }
    const bareKeys = await generateArchiveKeys()
    await backupAccount(alice.did, {
      archive: new AccountArchive(new FsArchiveStore(join(work, 'no-prefs')), bareKeys, alice.did),
      resolver: resolver(),
      workDir: work,
    })
    const bare = Fastify()
    await bare.register(backupReadApi, {
      store: new FsArchiveStore(join(work, 'no-prefs')),
      keys: bareKeys,
      resolver: resolver(),
      serviceDid: 'did:web:backups.example.com',
      operatorToken: 'operator-secret',
      workDir: work,
    })
    const bareUrl = await bare.listen({ port: 0, host: '127.0.0.1' })
    try {
      const res = await fetch(`${bareUrl}/xrpc/app.bsky.actor.getPreferences?did=${alice.did}`, {
        headers: { authorization: 'Bearer operator-secret' },
      })
      expect(res.status).toBe(400)
      expect(((await res.json()) as { error: string }).error).toBe('PreferencesNotBackedUp')
    } finally {
      await bare.close()
    }

    // A wrong app password: the run fails by name and keeps nothing.
    process.env.PDS_BACKUP_APP_PASSWORD = 'aaaa-bbbb-cccc-dddd'
    try {
      const refused = await cli('run', alice.did, '--archive', join(work, 'prefs'), '--key', key)
      expect(refused.code).toBe(1)
      expect(refused.err).toMatch(/backup failed, nothing of this run was kept: AuthenticationRequired/)
    } finally {
      delete process.env.PDS_BACKUP_APP_PASSWORD
    }
  })
})
