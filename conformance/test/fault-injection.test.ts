import { readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import { type AccountState, NSID, withoutCredentials } from '@pds-transfer/core'
import type { FailureReason, SourceClient } from '@pds-transfer/destination'
import { Agent, fetch as undiciFetch } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildAccount, type FixtureAccount } from '../src/fixtures/build-account.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { type Fault, type FaultProxy, startFaultProxy } from '../src/harness/fault-proxy.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type SourceServer, startSourceServer } from '../src/harness/source-server.ts'

const SCOPES = [NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus, 'com.atproto.sync.getBlob']
const RUNS = Number(process.env.FAULT_RUNS ?? 30)
const SEED = Number(process.env.FAULT_SEED ?? 20261124)
const STALL_TIMEOUT_MS = 250
const BLOBS = 6
/** Roughly the size of one request the destination sends (headers, token, JSON body). */
const REQUEST_SPAN = 1000
/** Roughly the size of the source's well-known fetch and of the destination's answer. */
const WELL_KNOWN_SPAN = { request: 200, response: 650 }

/** Every named failure (the compiler checks the list is complete), to tell one from a stray string. */
const REASONS: Record<FailureReason, true> = {
  SourceRefused: true,
  SourceUnreachable: true,
  NoCommonAlgorithm: true,
  StreamInvalid: true,
  StreamCut: true,
  RepoInvalid: true,
  BlobInvalid: true,
  PreferencesInvalid: true,
  AccountStateInvalid: true,
  AccountAlreadyActive: true,
  PlcOperationInvalid: true,
  PlcSubmitFailed: true,
  ActivationFailed: true,
  NoProgress: true,
  LimitExceeded: true,
  Interrupted: true,
  LocalStorage: true,
  Cancelled: true,
  PlcUnreachable: true,
  BlobsMissing: true,
  Internal: true,
}

/** Small deterministic PRNG (mulberry32), so a failing run can be replayed with FAULT_SEED. */
function prng(seed: number) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * One connection's fault: none with probability `clean`, otherwise a cut, bit flip or stall
 * at a random offset of the request or the response stream.
 */
function pickFault(
  random: () => number,
  clean: number,
  span: { request: number; response: number },
  requestShare: number,
): Fault {
  if (random() < clean) return { kind: 'none' }
  const on = random() < requestShare ? 'request' : 'response'
  const at = Math.floor(random() * span[on])
  const kind = random()
  if (kind < 0.4) return { kind: 'cut', on, at }
  if (kind < 0.73) return { kind: 'corrupt', on, at, mask: 1 << Math.floor(random() * 8) }
  return { kind: 'stall', on, at, ms: random() < 0.5 ? STALL_TIMEOUT_MS * 3 : STALL_TIMEOUT_MS / 5 }
}

/**
 * Preferences and private state no other run's account has, so that data landing on the
 * wrong account, or left over from an earlier run, shows as a difference.
 */
function personalData(run: number): { preferences: unknown[]; state: AccountState } {
  return {
    preferences: [
      { $type: 'app.bsky.actor.defs#adultContentPref', enabled: run % 2 === 0 },
      { $type: 'app.bsky.actor.defs#contentLabelPref', label: `label-${run}`, visibility: 'warn' },
      {
        $type: 'app.bsky.actor.defs#savedFeedsPrefV2',
        items: [{ id: `feed${run}`, type: 'timeline', value: 'following', pinned: run % 3 === 0 }],
      },
      { $type: 'app.bsky.actor.defs#mutedWordsPref', items: [{ value: `word${run}`, targets: ['content'] }] },
    ],
    state: {
      email: `run${run}@example.com`,
      emailConfirmed: run % 2 === 1,
      inviteCodes: [`invite-${run}-a`, `invite-${run}-b`],
      appPasswords: [{ name: `app-${run}`, hash: `hash-${run}` }],
      notificationRouting: { run },
      mutedWords: [`muted-${run}`],
      pinnedFeeds: [`at://did:plc:feeds/app.bsky.feed.generator/run${run}`],
    },
  }
}

/**
 * Issue 7's and 16's fault injection: transfers through TCP proxies that reset connections at
 * random offsets, flip random bits and stall, in both directions between the PDSes and on the
 * source's fetch of the destination's well-known keys. Each run moves a fresh account (so
 * nothing at the destination was written by an earlier run) and must end either imported
 * identical in everything that moves (repo, blobs, preferences, private state, handle) or
 * failed with a named reason; never imported with missing or altered data.
 */
describe('fault injection between the PDSes', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let dest: DestinationServer
  let proxy: FaultProxy
  const random = prng(SEED)
  // Its own sequence: which connection opens first, to the source or the destination, is timing.
  const wellKnownRandom = prng(SEED ^ 0x5bd1e995)
  /** Roughly the size of the current run's export response, to aim offsets inside it. */
  let responseSpan = 0

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    source = await startSourceServer({
      plc: plcDir,
      blobpackTarget: 48 * 1024,
      exportsPerDestinationPerHour: 10_000,
    })
    dest = await startDestinationServer({
      plc: plcDir,
      limits: { stallTimeoutMs: STALL_TIMEOUT_MS, retry: { attempts: 4, baseDelayMs: 5 } },
    })
    proxy = await startFaultProxy(source.url, () =>
      pickFault(random, 0.25, { request: REQUEST_SPAN, response: responseSpan }, 1 / 3),
    )
  }, 120_000)

  afterAll(async () => {
    await proxy?.close()
    await dest?.close()
    await source?.close()
    await plcDir?.close()
  })

  /**
   * The real client, except that its connections go through the proxy (a fresh pool per run),
   * and its token names a client at `origin`, where the source fetches the destination's keys.
   */
  function proxiedClient(did: string, origin: string, agent: Agent): SourceClient {
    const clientId = dest.clientId.replace(dest.url, origin)
    const token = source.auth.issue({ did, clientId }, SCOPES)
    return {
      url: source.url,
      fetch: async (path, init) => {
        const headers = new Headers(init?.headers)
        headers.set('authorization', `Bearer ${token}`)
        // undici's own fetch: Node's bundled one cannot take this undici version's Agent.
        const res = await undiciFetch(`${proxy.url}${path}`, {
          method: init?.method ?? 'GET',
          headers: Object.fromEntries(headers),
          body: init?.body as string | undefined,
          signal: init?.signal ?? null,
          dispatcher: agent,
        })
        return res as unknown as Response
      },
    }
  }

  /** What differs between the account at the source and at the destination (nothing, if intact). */
  async function differences(account: FixtureAccount): Promise<string[]> {
    const { did } = account
    const wrong: string[] = []
    const car = (store: typeof source.store) => store.exportCar(did).then(Buffer.from)
    if (!(await car(dest.store)).equals(await car(source.store))) wrong.push('repo CAR')
    const held = dest.store.db.prepare('SELECT cid FROM blob WHERE did = ? ORDER BY cid').pluck().all(did)
    if (!isDeepStrictEqual(held, [...account.blobs.keys()].sort())) wrong.push(`blobs held ${held}`)
    for (const [cid, bytes] of account.blobs) {
      const chunks: Uint8Array[] = []
      for await (const c of (await dest.store.openBlob(did, cid)) ?? []) chunks.push(c)
      if (!Buffer.concat(chunks).equals(Buffer.from(bytes))) wrong.push(`blob ${cid}`)
    }
    const same = async (what: string, read: (store: typeof source.store) => Promise<unknown>) => {
      if (!isDeepStrictEqual(await read(dest.store), await read(source.store))) wrong.push(what)
    }
    await same('preferences', (store) => store.getPreferences(did))
    // Everything but credentials, which never move (D24): the source's app passwords stay there.
    const state = await dest.store.getAccountState(did)
    if (!isDeepStrictEqual(state, withoutCredentials(await source.store.getAccountState(did)))) {
      wrong.push('account state')
    }
    await same('handle', async (store) => (await store.getAccount(did))?.handle)
    return wrong
  }

  it(
    `${RUNS} transfers under random faults end imported identical or failed by name`,
    async () => {
      const injected: Record<string, number> = {}
      const outcomes = {
        imported: 0,
        importedAfterFaults: 0,
        failed: {} as Record<string, number>,
      }
      /** Every run that broke a rule, with what went wrong: all are reported, not only the first. */
      const problems: string[] = []
      const count = (faults: Fault[], at: string) => {
        for (const f of faults) {
          const name = f.kind === 'none' ? 'none' : `${at} ${f.on} ${f.kind}`
          injected[name] = (injected[name] ?? 0) + 1
        }
      }
      const blobDir = join(dest.store.dir, 'blobs')
      for (let run = 0; run < RUNS; run++) {
        const blobSizes = Array.from({ length: BLOBS }, (_, j) => 15_000 + 4_000 * j + run)
        const account = await buildAccount(source.store, {
          plcUrl: plcDir.url,
          pdsUrl: source.url,
          pdsRotationKey: source.rotationKey,
          shape: { handle: `run${run}.fault.test`, posts: 30, blobSizes, ...personalData(run) },
        })
        responseSpan = (await source.store.exportCar(account.did)).length + blobSizes.reduce((a, b) => a + b)
        // A fresh origin each run, so the source cannot answer from its cache of the keys.
        const keysProxy = await startFaultProxy(dest.url, () =>
          pickFault(wellKnownRandom, 0.7, WELL_KNOWN_SPAN, 0.5),
        )
        const before = proxy.applied.length
        const agent = new Agent()
        const started = await dest.engine.start({
          did: account.did,
          client: proxiedClient(account.did, keysProxy.url, agent),
        })
        const t = await dest.engine.wait(started.transferId)
        await agent.close()
        await keysProxy.close()
        count(proxy.applied.slice(before), 'source')
        count(keysProxy.applied, 'well-known')
        const faults = {
          source: proxy.applied.slice(before).filter((f) => f.kind !== 'none'),
          wellKnown: keysProxy.applied.filter((f) => f.kind !== 'none'),
        }
        const wrong: string[] = []
        if (t.status === 'failed') {
          const reason = t.failure?.reason ?? ''
          if (Object.hasOwn(REASONS, reason) && t.failure?.message) {
            // With the source's XRPC error or the wire error, where the message starts with one.
            const cause = /^([A-Z][\w ]*?)(?: \(\d{3}\))?: /.exec(t.failure.message)?.[1]
            const key = cause ? `${reason} (${cause})` : reason
            outcomes.failed[key] = (outcomes.failed[key] ?? 0) + 1
          } else wrong.push('failed without a named reason')
        } else if (t.stage !== 'awaitingPlcToken' || t.missingBlobs.length > 0) {
          wrong.push(`neither failed nor imported whole (missing blobs [${t.missingBlobs}])`)
        } else {
          // Anything that claims to be imported must be complete and unaltered.
          const differs = await differences(account)
          if (differs.length > 0) wrong.push(`imported, but differs in: ${differs.join(', ')}`)
          else {
            outcomes.imported++
            if (faults.source.length + faults.wellKnown.length > 0) outcomes.importedAfterFaults++
          }
        }
        if (await dest.sink.isActive(account.did)) wrong.push('active at the destination')
        const staged = dest.store.db.prepare('SELECT count(*) FROM staged_block').pluck().get() as number
        if (staged > 0) wrong.push(`${staged} staged blocks left`)
        const temps = (await readdir(blobDir)).filter((f) => f.startsWith('.incoming-'))
        if (temps.length > 0) wrong.push(`temporary blob files left: ${temps.join(', ')}`)
        if (wrong.length > 0) {
          problems.push(
            `run ${run} (seed ${SEED}): ${wrong.join('; ')}; ended ${t.stage} ${JSON.stringify(t.failure ?? {})}; ` +
              `faults ${JSON.stringify(faults)}`,
          )
          // Removed once reported, so that each later run is judged on what it leaves.
          dest.store.db.prepare('DELETE FROM staged_block').run()
          await Promise.all(temps.map((f) => rm(join(blobDir, f), { force: true })))
        }
      }
      console.log(
        `fault injection (seed ${SEED}, ${RUNS} transfers): connections ${JSON.stringify(injected)}; ` +
          `imported identical ${outcomes.imported} (${outcomes.importedAfterFaults} after surviving faults); ` +
          `failed by name ${JSON.stringify(outcomes.failed)}; broke a rule ${problems.length}`,
      )
      expect(problems).toEqual([])
      const faulted = Object.entries(injected).reduce((n, [name, k]) => (name === 'none' ? n : n + k), 0)
      expect(faulted).toBeGreaterThan(RUNS / 2)
      expect(outcomes.importedAfterFaults).toBeGreaterThan(0)
    },
    Math.max(240_000, RUNS * 1_000),
  )
})
