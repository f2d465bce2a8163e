import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DRAFT_OAUTH_SCOPE, NSID, PLAIN_PDS_OAUTH_SCOPE } from '@pds-transfer/core'
import type { InboundTransfer } from '@pds-transfer/destination'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { type SeededAccount, seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { ChildPeer } from '../src/harness/child-peer.ts'
import { freePort } from '../src/harness/destination-server.ts'
import { startDraftPds } from '../src/harness/draft-pds.ts'
import { type HttpFault, type HttpFaultProxy, startHttpFaultProxy } from '../src/harness/http-fault-proxy.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type PlcGate, startPlcGate } from '../src/harness/plc-gate.ts'
import { SqliteAccountStore } from '../src/store/sqlite-account-store.ts'
import {
  type DrillSource,
  destinationProcessEnv,
  expectMoved,
  plcCode,
  type SourceRepo,
  signInAt,
  sourceRecords,
} from './sync-drill-checks.ts'

/** Small accounts: the drills are about the completion's steps, not the volume. */
const SHAPE = { posts: 12, images: 3, imageBytes: 40 * 1024, follows: 2 }
const DESTINATION_SCRIPT = join(import.meta.dirname, '../src/harness/destination-process.ts')
const SIGN_PLC = 'com.atproto.identity.signPlcOperation'
const DEACTIVATE = 'com.atproto.server.deactivateAccount'

/** Where the destination is killed, and how the world goes on meanwhile. */
interface KillPoint {
  /** Set up before the user's code is sent; resolves once the destination is at the step. */
  arm(world: World): Promise<void>
  /** Undone after the kill (the lost request or answer stays lost). */
  disarm(world: World): void
}

/** The peers a drill's kill point acts on. */
interface World {
  gate: PlcGate
  proxy: HttpFaultProxy
  /** What the proxy does with the source's requests from now on (none: passed on). */
  fault: ((nsid: string) => HttpFault) | undefined
  /** Settles what the fault holds. */
  release(): void
  released: Promise<void>
}

/** What the user does once the restarted destination has gone as far as it can alone. */
type UserAction = 'nothing' | 'same code' | 'new code'

/**
 * Issue 19: the destination SIGKILLed at each durable step of the completion of a move from a
 * plain `@atproto/pds` and from a source serving the current draft, then started again on the
 * same data. `recover()` must continue the completion from its recorded step (the repo and blobs
 * are never pulled again) and end with the account identical at B, PLC naming B, A deactivated;
 * or, where a step cannot be repeated, stop at the code step with a named reason, the user's next
 * action, and nothing lost.
 */
describe('the destination killed during a plain and a draft completion', () => {
  let plc: PlcDirectory
  let gate: PlcGate
  let plain: Awaited<ReturnType<typeof startPlainPds>>
  let draft: Awaited<ReturnType<typeof startDraftPds>>
  let seq = 0
  const cleanups: (() => Promise<void>)[] = []

  beforeAll(async () => {
    plc = await startPlcDirectory()
    gate = await startPlcGate(plc.url)
    plain = await startPlainPds(plc.namedUrl)
    draft = await startDraftPds(plc.namedUrl)
  }, 120_000)
  afterEach(async () => {
    gate.mode = 'open'
    for (const clean of cleanups.splice(0).reverse()) await clean()
  })
  afterAll(async () => {
    await draft?.close()
    await plain?.close()
    await gate?.close()
    await plc?.close()
  })

  const sources = (): Record<'plain' | 'draft', DrillSource> => ({
    plain: { url: plain.url, pds: plain.pds, scope: PLAIN_PDS_OAUTH_SCOPE },
    draft: { url: draft.url, pds: draft.pds, scope: DRAFT_OAUTH_SCOPE },
  })

  /**
   * Pulls an account into a destination process, sends the user's code (unless the kill point
   * is before it), SIGKILLs the destination at `kill`, starts it again on the same data and
   * lets it go on; then the user does `user`. Returns the record the restarted process found
   * (its stage at the kill) and what it ended with.
   */
  async function drill(opts: {
    from: 'plain' | 'draft'
    kill: KillPoint | 'after the code request'
    user: UserAction
    /** The restarted destination has no session with the source (a stored grant lost). */
    sessionLost?: boolean
    /** Checked between the kill and the restart. */
    afterKill?: (alice: SeededAccount) => Promise<void>
    /** The account is left active at the source, and the user told so in these words. */
    sourceLeftActive?: RegExp
  }): Promise<{ atKill: InboundTransfer; beforeUser: InboundTransfer; world: World; killedAt: number }> {
    const source = sources()[opts.from]
    const n = ++seq
    const alice: SeededAccount = await seedReferenceAccount(source.url, {
      ...SHAPE,
      handle: `killdone${n}.test`,
      email: `killdone${n}@example.com`,
      password: `kill-completion-password-${n}`,
    })
    let release = () => {}
    const world: World = {
      gate,
      fault: undefined,
      release: () => release(),
      released: new Promise<void>((resolve) => {
        release = resolve
      }),
      proxy: await startHttpFaultProxy(source.url, ({ nsid }) => world.fault?.(nsid)),
    }
    cleanups.push(async () => {
      world.release()
      await world.proxy.close()
    })
    const dir = await mkdtemp(join(tmpdir(), 'kill-completion-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    // The destination reaches PLC through the gate; the source's requests go through the proxy.
    const env = destinationProcessEnv({
      plcUrl: gate.url,
      dir,
      port: await freePort(),
      source,
      alice,
      via: world.proxy.url,
    })

    const first = ChildPeer.fork<{ url: string }>(DESTINATION_SCRIPT, env)
    let transferId: string
    let killedAt: number
    let records: SourceRepo
    try {
      await first.ready
      transferId = (await first.call<InboundTransfer>({ start: alice.did })).transferId
      const pulled = await first.call<InboundTransfer>({ wait: transferId })
      expect(pulled.failure).toBeUndefined()
      expect(pulled).toMatchObject({ stage: 'awaitingPlcToken', missingBlobs: [] })
      expect(pulled.plcCodeRequestedAt).toBeGreaterThan(0)
      // Read now: once deactivated, the source no longer serves the repo.
      records = await sourceRecords(plc.url, source, alice.did)
      if (opts.kill !== 'after the code request') {
        const reached = opts.kill.arm(world)
        // Never answered: the process dies first.
        void first.call({ complete: transferId, plcToken: await plcCode(source, alice.did) }).catch(() => {})
        await reached
      }
    } finally {
      killedAt = world.proxy.requests.length
      await first.kill()
    }
    if (opts.kill !== 'after the code request') opts.kill.disarm(world)
    world.fault = undefined
    world.release()
    await opts.afterKill?.(alice)

    const second = ChildPeer.fork<{ url: string; recovered: InboundTransfer[] }>(DESTINATION_SCRIPT, {
      ...env,
      ...(opts.sessionLost && { RESTORE_SESSION: '0' }),
    })
    cleanups.push(() => second.kill())
    const { url, recovered } = await second.ready
    expect(recovered.map((t) => t.transferId)).toEqual([transferId])
    const atKill = recovered[0] as InboundTransfer
    const beforeUser = await second.call<InboundTransfer>({ wait: transferId })
    let done = beforeUser
    if (opts.user === 'new code') await second.call({ newCode: transferId })
    if (opts.user !== 'nothing') {
      const code = await plcCode(source, alice.did)
      done = await second.call<InboundTransfer>({ complete: transferId, plcToken: code })
    }

    // Continued, never restarted: nothing of the account was pulled again after the kill.
    const since = world.proxy.requests.slice(killedAt)
    expect(since.filter((r) => r.nsid === 'com.atproto.sync.getRepo' && !r.query.has('since'))).toEqual([])
    for (const m of ['com.atproto.sync.listBlobs', 'com.atproto.sync.getBlob', NSID.exportAccount])
      expect(since.filter((r) => r.nsid === m)).toEqual([])
    const landed = await SqliteAccountStore.open(dir)
    try {
      await expectMoved({
        plcUrl: plc.url,
        source,
        store: landed,
        destUrl: url,
        alice,
        done,
        records,
        minRecords: SHAPE.posts + SHAPE.images + SHAPE.follows,
        ...(opts.sourceLeftActive && { sourceLeftActive: opts.sourceLeftActive }),
      })
    } finally {
      landed.close()
    }
    return { atKill, beforeUser, world, killedAt }
  }

  /** Polls until `reached` holds (the kill point): a drill that never gets there fails here. */
  async function until(reached: () => boolean): Promise<void> {
    for (let i = 0; i < 1200 && !reached(); i++) await new Promise((r) => setTimeout(r, 25))
    expect(reached()).toBe(true)
  }

  /** The source's `nsid` request is held before it reaches the source (it never does). */
  const lostRequest = (nsid: string): KillPoint => ({
    async arm(world) {
      world.fault = (m) => (m === nsid ? { lose: 'request', until: world.released } : undefined)
      await until(() => world.proxy.requests.some((r) => r.nsid === nsid))
    },
    disarm() {},
  })

  /** The source answers `nsid`, and the answer is held (the destination never hears it). */
  const lostAnswer = (nsid: string): KillPoint => ({
    async arm(world) {
      world.fault = (m) => (m === nsid ? { lose: 'answer', until: world.released } : undefined)
      await until(() => world.proxy.requests.some((r) => r.nsid === nsid && r.status === 200))
    },
    disarm() {},
  })

  /** PLC never sees the operation (`drop`), or accepts it and its answer is lost (`swallow`). */
  const atPlc = (mode: 'drop' | 'swallow'): KillPoint => ({
    async arm(world) {
      world.gate.mode = mode
      const held = await world.gate.held()
      if (mode === 'swallow') expect(held.status).toBe(200)
    },
    disarm(world) {
      world.gate.mode = 'open'
    },
  })

  describe('from a plain PDS', () => {
    it('after the PLC code request: the code step is where it was; the same code finishes the move', async () => {
      const { atKill } = await drill({ from: 'plain', kill: 'after the code request', user: 'same code' })
      expect(atKill.stage).toBe('awaitingPlcToken')
    }, 120_000)

    it('signPlcOperation lost on its way: the restarted destination asks again with the same code and finishes', async () => {
      const { atKill } = await drill({ from: 'plain', kill: lostRequest(SIGN_PLC), user: 'nothing' })
      expect(atKill.stage).toBe('signing')
    }, 120_000)

    it('signPlcOperation answered, the answer lost (the code is spent): back at the code step by name; a new code finishes the move', async () => {
      const { atKill, beforeUser } = await drill({
        from: 'plain',
        kill: lostAnswer(SIGN_PLC),
        user: 'new code',
      })
      expect(atKill.stage).toBe('signing')
      expect(beforeUser).toMatchObject({
        status: 'importing',
        stage: 'awaitingPlcToken',
        failure: { reason: 'SourceRefused', message: expect.stringMatching(/new code/) },
      })
      expect(beforeUser.completion).toBeUndefined()
    }, 120_000)

    it('the PLC operation never reached PLC: the restarted destination submits it again and finishes', async () => {
      const { atKill } = await drill({ from: 'plain', kill: atPlc('drop'), user: 'nothing' })
      expect(atKill.stage).toBe('submittingPlc')
    }, 120_000)

    it('PLC accepted the operation, the answer lost: the restarted destination sees PLC names it, activates and deactivates A', async () => {
      const posts = gate.posts
      const { atKill } = await drill({ from: 'plain', kill: atPlc('swallow'), user: 'nothing' })
      expect(atKill.stage).toBe('submittingPlc')
      expect(gate.posts - posts).toBe(1)
    }, 120_000)

    it('active here, the deactivation of A lost on its way: the restarted destination deactivates A and finishes', async () => {
      const { atKill } = await drill({ from: 'plain', kill: lostRequest(DEACTIVATE), user: 'nothing' })
      expect(atKill.stage).toBe('activating')
    }, 120_000)

    it('A deactivated, the answer lost: the restarted destination finishes without reporting A as left active', async () => {
      const { atKill } = await drill({ from: 'plain', kill: lostAnswer(DEACTIVATE), user: 'nothing' })
      expect(atKill.stage).toBe('activating')
    }, 120_000)

    it('A deactivated, the answer and the session lost: the public status of A says it is done, not reported as left active', async () => {
      const { atKill } = await drill({
        from: 'plain',
        kill: lostAnswer(DEACTIVATE),
        user: 'nothing',
        sessionLost: true,
      })
      expect(atKill.stage).toBe('activating')
    }, 120_000)

    it('the deactivation of A lost on its way and the session lost: moved to B, and the user told to deactivate A', async () => {
      const { atKill } = await drill({
        from: 'plain',
        kill: lostRequest(DEACTIVATE),
        user: 'nothing',
        sessionLost: true,
        sourceLeftActive: /lost its session/,
      })
      expect(atKill.stage).toBe('activating')
    }, 120_000)
  })

  describe('from a source serving the current draft', () => {
    it('after the PLC code request: the code step is where it was; the same code finishes the move', async () => {
      const { atKill } = await drill({ from: 'draft', kill: 'after the code request', user: 'same code' })
      expect(atKill.stage).toBe('awaitingPlcToken')
    }, 120_000)

    it('completeTransfer lost on its way: the restarted destination asks again with the same code and finishes', async () => {
      const { atKill } = await drill({
        from: 'draft',
        kill: lostRequest(NSID.completeTransfer),
        user: 'nothing',
      })
      expect(atKill.stage).toBe('signing')
    }, 120_000)

    it('completeTransfer answered (A deactivated, the operation signed), the answer lost: the restarted destination gets the same operation over its stored session and finishes', async () => {
      const { atKill } = await drill({
        from: 'draft',
        kill: lostAnswer(NSID.completeTransfer),
        user: 'nothing',
        // Only the stored grant can finish: the source refuses a new sign-in to a deactivated account.
        afterKill: async (alice) => {
          await expect(signInAt(plc.url, sources().draft, alice)).rejects.toThrow(/deactivated/)
        },
      })
      expect(atKill.stage).toBe('signing')
    }, 120_000)

    it('the PLC operation never reached PLC: the restarted destination submits it again and finishes', async () => {
      const { atKill } = await drill({ from: 'draft', kill: atPlc('drop'), user: 'nothing' })
      expect(atKill.stage).toBe('submittingPlc')
    }, 120_000)

    it('PLC accepted the operation, the answer lost: the restarted destination sees PLC names it and activates', async () => {
      const posts = gate.posts
      const { atKill } = await drill({ from: 'draft', kill: atPlc('swallow'), user: 'nothing' })
      expect(atKill.stage).toBe('submittingPlc')
      expect(gate.posts - posts).toBe(1)
    }, 120_000)
  })
})
