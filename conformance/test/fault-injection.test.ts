import { NSID } from '@pds-transfer/core'
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
 * Issue 7's fault injection: transfers through a TCP proxy that resets connections at random
 * offsets, flips random bits and stalls. Each transfer must end either imported byte for byte
 * or failed with a named reason; never imported with missing or altered data.
 */
describe('fault injection between the PDSes', () => {
  let plcDir: PlcDirectory
  let source: SourceServer
  let dest: DestinationServer
  let proxy: FaultProxy
  const accounts: FixtureAccount[] = []
  const random = prng(SEED)
  /** Roughly the size of one export response, to aim offsets inside it. */
  let span = 0

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
    for (let i = 0; i < 3; i++) {
      accounts.push(
        await buildAccount(source.store, {
          plcUrl: plcDir.url,
          pdsUrl: source.url,
          pdsRotationKey: source.rotationKey,
          shape: { posts: 30, blobSizes: Array.from({ length: 6 }, (_, j) => 15_000 + 4_000 * j + i) },
        }),
      )
    }
    span = (await source.store.exportCar(accounts[0]!.did)).length + 6 * 30_000
    proxy = await startFaultProxy(source.url, () => {
      const r = random()
      const at = Math.floor(random() * span)
      if (r < 0.25) return { kind: 'none' }
      if (r < 0.55) return { kind: 'cut', at }
      if (r < 0.8) return { kind: 'corrupt', at, mask: 1 << Math.floor(random() * 8) }
      return { kind: 'stall', at, ms: random() < 0.5 ? STALL_TIMEOUT_MS * 3 : STALL_TIMEOUT_MS / 5 }
    })
  }, 120_000)

  afterAll(async () => {
    await proxy?.close()
    await dest?.close()
    await source?.close()
    await plcDir?.close()
  })

  /** The real client, except that its connections go through the proxy (a fresh pool per run). */
  function proxiedClient(did: string, agent: Agent): SourceClient {
    const token = source.auth.issue({ did, clientId: dest.clientId }, SCOPES)
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

  async function identical(account: FixtureAccount): Promise<boolean> {
    const car = (did: string, store: typeof source.store) => store.exportCar(did).then(Buffer.from)
    if (!(await car(account.did, dest.store)).equals(await car(account.did, source.store))) return false
    for (const [cid, bytes] of account.blobs) {
      const chunks: Uint8Array[] = []
      for await (const c of (await dest.store.openBlob(account.did, cid)) ?? []) chunks.push(c)
      if (!Buffer.concat(chunks).equals(Buffer.from(bytes))) return false
    }
    const prefs = JSON.stringify(await dest.store.getPreferences(account.did))
    return prefs === JSON.stringify(await source.store.getPreferences(account.did))
  }

  it(`${RUNS} transfers under random faults end imported intact or failed by name`, async () => {
    const injected: Record<Fault['kind'], number> = { none: 0, cut: 0, corrupt: 0, stall: 0 }
    const outcomes = {
      imported: 0,
      importedAfterFaults: 0,
      failed: {} as Partial<Record<FailureReason, number>>,
    }
    for (let run = 0; run < RUNS; run++) {
      const account = accounts[run % accounts.length] as FixtureAccount
      dest.store.db.prepare('DELETE FROM repo_root WHERE did = ?').run(account.did)
      dest.store.db.prepare('DELETE FROM blob WHERE did = ?').run(account.did)
      const before = proxy.applied.length
      const agent = new Agent()
      const started = await dest.engine.start({ did: account.did, client: proxiedClient(account.did, agent) })
      const t = await dest.engine.wait(started.transferId)
      await agent.close()
      const faults = proxy.applied.slice(before).filter((f) => f.kind !== 'none')
      for (const f of proxy.applied.slice(before)) injected[f.kind]++
      const context = `run ${run} (seed ${SEED}): faults ${JSON.stringify(faults)}; ${JSON.stringify(t.failure)}`
      if (t.status === 'failed') {
        expect(t.failure?.reason, context).toMatch(/^[A-Z][A-Za-z]+$/)
        expect(t.failure?.message, context).toBeTruthy()
        outcomes.failed[t.failure!.reason] = (outcomes.failed[t.failure!.reason] ?? 0) + 1
      } else {
        // Anything that claims to be imported must be complete and unaltered.
        expect(t, context).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
        expect(await identical(account), context).toBe(true)
        outcomes.imported++
        if (faults.length > 0) outcomes.importedAfterFaults++
      }
      expect(await dest.sink.isActive(account.did)).toBe(false)
      expect(dest.store.db.prepare('SELECT count(*) AS n FROM staged_block').get()).toEqual({ n: 0 })
    }
    console.log(
      `fault injection (seed ${SEED}, ${RUNS} transfers): connections ${JSON.stringify(injected)}; ` +
        `imported intact ${outcomes.imported} (${outcomes.importedAfterFaults} after surviving faults); ` +
        `failed by name ${JSON.stringify(outcomes.failed)}`,
    )
    expect(injected.cut + injected.corrupt + injected.stall).toBeGreaterThan(RUNS / 2)
    expect(outcomes.importedAfterFaults).toBeGreaterThan(0)
  }, 240_000)
})
