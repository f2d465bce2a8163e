import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { InboundTransfer } from '@pds-transfer/destination'
import { seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { ChildPeer } from '../src/harness/child-peer.ts'
import { freePort } from '../src/harness/destination-server.ts'
import { listAllRecords } from '../src/harness/list-records.ts'
import { migrateByClient } from './client-migration.ts'
import type { Phase, TimelineEvent } from './timeline.ts'
import { migrateByTransfer } from './transfer-migration.ts'

const PDS_SCRIPT = join(import.meta.dirname, 'reference-pds-process.ts')
const COLLECTIONS = ['app.bsky.feed.post', 'app.bsky.graph.follow']

/** The account both flows move: `posts` posts in all, `images` of them with one image each. */
export interface PdsAccountShape {
  posts: number
  images: number
  imageBytes: number
  follows: number
}

export type MigrationFlow = 'client-orchestrated' | '0014 transfer' | 'draft pull' | 'plain-PDS pull'

/** One migration between two fresh reference PDSes, verified after the clock stopped. */
export interface PdsMigrationResult {
  flow: MigrationFlow
  records: number
  blobs: number
  /** Blob bytes moved. */
  blobMB: number
  /** From the user's start to the account active at the destination (seeding excluded). */
  seconds: number
  phases: Phase[]
  /** The pull (0014, draft or plain) split by the destination's record of it. */
  pull?: Phase[]
  sourcePeakRssMiB: number
  destinationPeakRssMiB: number
  /** What was checked at both PDSes after the run; every one must hold for the time to count. */
  checks: string[]
}

type PdsReady = { url: string; serviceDid: string }

/**
 * Starts a pair of reference PDSes, each in its own process, seeds the account on A through its
 * public API, moves it to B by `flow`, checks that everything arrived and that the identity
 * moved, and stops both PDSes. With `cpuProfDir`, each PDS writes a CPU profile of the timed
 * migration alone there (`[<label>-]<flow>-source.cpuprofile`, `…-destination.cpuprofile`).
 */
export async function benchPdsMigration(
  flow: MigrationFlow,
  plcUrl: string,
  shape: PdsAccountShape,
  options: { cpuProfDir?: string; profileLabel?: string } = {},
): Promise<PdsMigrationResult> {
  const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-bench-pds-'))
  const fork = async (name: string, extra: Record<string, string> = {}) => {
    const env = { DATA_DIR: join(dir, name), PORT: String(await freePort()), PLC_URL: plcUrl, ...extra }
    return ChildPeer.fork<PdsReady>(PDS_SCRIPT, env)
  }
  // The plain-PDS pull leaves a PDS with nothing of ours installed, the draft pull one whose
  // source role serves the current draft only (spec/dialect-draft.md); the destination is the
  // same, and picks the dialect itself at /migrate.
  const a = await fork(
    'a',
    flow === 'plain-PDS pull' ? { PLAIN: '1' } : flow === 'draft pull' ? { DRAFT: '1' } : {},
  )
  let b: ChildPeer<PdsReady> | undefined
  try {
    const { url: aUrl } = await a.ready
    // B resolves the `.test` handles typed into /migrate at A, where the accounts live.
    b = await fork('b', { HANDLE_RESOLVER_URL: aUrl })
    const { url: bUrl } = await b.ready
    const destination = b

    const email = 'alice@example.com'
    const alice = await seedReferenceAccount(aUrl, {
      handle: 'alice.test',
      email,
      password: 'alice-bench-password',
      posts: shape.posts - shape.images,
      images: shape.images,
      imageSide: 64,
      imageBytes: shape.imageBytes,
      follows: shape.follows,
    })
    const before = new Map<string, string>()
    for (const c of COLLECTIONS) before.set(c, JSON.stringify(await listAllRecords(aUrl, alice.did, c)))
    const readPlcToken = () => a.call<string>({ plcToken: email })

    if (options.cpuProfDir) await Promise.all([a.call({ profile: 'start' }), b.call({ profile: 'start' })])
    let seconds: number
    let phases: Phase[]
    let pull: Phase[] | undefined
    if (flow === 'client-orchestrated') {
      const moved = await migrateByClient({
        oldPdsUrl: aUrl,
        newPdsUrl: bUrl,
        identifier: alice.handle,
        password: alice.password,
        newHandle: alice.handle,
        newEmail: email,
        newPassword: 'alice-new-password',
        readPlcToken,
      })
      ;({ seconds, phases } = moved)
    } else {
      const moved = await migrateByTransfer({
        destinationUrl: bUrl,
        handle: alice.handle,
        password: alice.password,
        readPlcToken,
        destination: {
          watch: (id) => destination.call({ watch: id }),
          pulled: (id) =>
            destination.call<{ transfer: InboundTransfer; timeline: TimelineEvent[] }>({ wait: id }),
          transfer: (id) => destination.call<InboundTransfer | undefined>({ transfer: id }),
        },
      })
      ;({ seconds, phases, pull } = moved)
    }

    if (options.cpuProfDir) {
      const path = (side: string) =>
        join(
          options.cpuProfDir as string,
          `${[options.profileLabel, flow.replace(/\W+/g, '-'), side].filter(Boolean).join('-')}.cpuprofile`,
        )
      await Promise.all([
        a.call({ profile: 'stop', path: path('source') }),
        b.call({ profile: 'stop', path: path('destination') }),
      ])
    }

    const checks: string[] = []
    let records = 0
    for (const c of COLLECTIONS) {
      const after = await listAllRecords(bUrl, alice.did, c)
      if (JSON.stringify(after) !== before.get(c)) throw new Error(`${flow}: ${c} records differ at B`)
      records += after.length
    }
    checks.push(`${records} records identical at B`)
    let blobBytes = 0
    for (const [cid, bytes] of alice.blobs) {
      const res = await fetch(`${bUrl}/xrpc/com.atproto.sync.getBlob?did=${alice.did}&cid=${cid}`)
      const got = Buffer.from(await res.arrayBuffer())
      if (!res.ok || sha256(got) !== sha256(bytes)) throw new Error(`${flow}: blob ${cid} differs at B`)
      blobBytes += got.length
    }
    checks.push(`${alice.blobs.size} blobs byte-identical at B (${(blobBytes / 1048576).toFixed(1)} MiB)`)
    const plcData = (await (await fetch(`${plcUrl}/${alice.did}/data`)).json()) as {
      services: { atproto_pds: { endpoint: string } }
    }
    if (plcData.services.atproto_pds.endpoint !== bUrl) throw new Error(`${flow}: PLC does not name B`)
    checks.push('PLC names B')
    const status = async (url: string) =>
      (await (await fetch(`${url}/xrpc/com.atproto.sync.getRepoStatus?did=${alice.did}`)).json()) as {
        active: boolean
      }
    if (!(await status(bUrl)).active || (await status(aUrl)).active)
      throw new Error(`${flow}: expected active at B and deactivated at A`)
    checks.push('active at B, deactivated at A')

    return {
      flow,
      records,
      blobs: alice.blobs.size,
      blobMB: blobBytes / 1e6,
      seconds,
      phases,
      ...(pull && { pull }),
      sourcePeakRssMiB: (await a.call<{ maxRssMiB: number }>({ rss: true })).maxRssMiB,
      destinationPeakRssMiB: (await b.call<{ maxRssMiB: number }>({ rss: true })).maxRssMiB,
      checks,
    }
  } finally {
    await Promise.all([a, b].map((peer) => peer && stop(peer)))
    await rm(dir, { recursive: true, force: true })
  }
}

async function stop(peer: ChildPeer<PdsReady>): Promise<void> {
  if (peer.child.exitCode !== null) return
  const timeout = setTimeout(() => void peer.kill(), 30_000)
  await peer.call({ stop: true }).catch(() => undefined)
  await peer.exited
  clearTimeout(timeout)
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}
