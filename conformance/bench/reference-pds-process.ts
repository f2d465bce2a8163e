/**
 * One reference PDS (`@atproto/pds` with our transfer roles, `startTransferPds`) in its own
 * process for the `pds` benchmark, so that its peak RSS and its CPU are its own, as they would
 * be on two real hosts. Env: DATA_DIR, PORT, PLC_URL, HANDLE_RESOLVER_URL (optional), PLAIN (set:
 * the PDS as shipped, without our routes, as a plain source), DRAFT (set: our source role serves
 * the current draft only, spec/dialect-draft.md, as `startDraftPds` does).
 * Its first message is `{ ready, url, serviceDid }`; then it answers IPC requests
 * (`{ id, ... }` → `{ id, result }`, see `ChildPeer`):
 * - `{ plcToken: email }`: the newest PLC code "emailed" to that address, waiting for one;
 * - `{ watch: transferId }`: starts recording the inbound transfer's stage changes;
 * - `{ wait: transferId }`: resolves when its pull has ended, with the record and the timeline;
 * - `{ transfer: transferId }`: the current record;
 * - `{ rss: true }`: `{ maxRssMiB }`;
 * - `{ profile: 'start' }`, `{ profile: 'stop', path }`: a CPU profile of just the measured
 *   window (not the seeding before it), written as a `.cpuprofile` to `path`;
 * - `{ stop: true }`: closes the PDS and exits.
 */
import { writeFile } from 'node:fs/promises'
import { Session } from 'node:inspector/promises'

import { ReferencePdsSink, startTransferPds } from '@pds-transfer/atproto-pds'
import type { InboundTransfer } from '@pds-transfer/destination'
import { peakRssMiB } from '../../packages/core/bench/peak-rss.ts'
import { startPlainPds } from '../src/harness/plain-pds.ts'
import { epochMs, type TimelineEvent } from './timeline.ts'

const env = (name: string): string => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is required`)
  return value
}

// The engine's record does not say when the account is created here, nor when the verified repo
// starts being indexed into the actor store (the reference PDS's own code, most of the repo's
// time): the sink is asked to.
const sinkEvents: TimelineEvent[] = []
const createAccount = ReferencePdsSink.prototype.createDeactivatedAccount
ReferencePdsSink.prototype.createDeactivatedAccount = async function (this: ReferencePdsSink, ...args) {
  sinkEvents.push({ at: epochMs(), event: 'account creation started' })
  try {
    return await createAccount.apply(this, args)
  } finally {
    sinkEvents.push({ at: epochMs(), event: 'account created' })
  }
}
const commitRepo = ReferencePdsSink.prototype.commitRepo
ReferencePdsSink.prototype.commitRepo = async function (this: ReferencePdsSink, ...args) {
  sinkEvents.push({ at: epochMs(), event: 'repo verified and staged' })
  try {
    return await commitRepo.apply(this, args)
  } finally {
    sinkEvents.push({ at: epochMs(), event: 'repo indexed' })
  }
}

// PLAIN=1: the PDS as shipped, nothing of ours in front (a plain source: no engine either).
const plain = process.env.PLAIN
  ? await startPlainPds(env('PLC_URL'), { dataDir: env('DATA_DIR'), port: Number(env('PORT')) })
  : undefined
const transferPds = plain
  ? undefined
  : await startTransferPds({
      dataDir: env('DATA_DIR'),
      port: Number(env('PORT')),
      plcUrl: env('PLC_URL'),
      ...(process.env.HANDLE_RESOLVER_URL && { handleResolverUrl: process.env.HANDLE_RESOLVER_URL }),
      // DRAFT=1: no well-known, the draft's exportAccount and completeTransfer, its own OAuth.
      ...(process.env.DRAFT && { sourceDialects: ['draft' as const] }),
      // Preferences are app.bsky routes, served only with an AppView configured; none runs here.
      env: { bskyAppViewUrl: 'http://127.0.0.1:9', bskyAppViewDid: 'did:web:appview.invalid' },
    })
const pds = {
  url: (plain?.url ?? transferPds?.url) as string,
  serviceDid: transferPds?.serviceDid ?? `did:web:localhost%3A${env('PORT')}`,
  ctx: (plain?.pds ?? transferPds?.pds)?.ctx as NonNullable<typeof transferPds>['pds']['ctx'],
  get engine() {
    if (!transferPds) throw new Error('a plain PDS has no transfer engine')
    return transferPds.engine
  },
  close: () => (plain ?? (transferPds as NonNullable<typeof transferPds>)).close(),
}

// Development mode has no SMTP server: catch the PLC codes at the mailer, whichever flow asked
// for them (requestPlcOperationSignature of the client-orchestrated flow and of a draft
// destination, or 0014's source role).
const tokens = new Map<string, string>()
const tokenWaiters = new Map<string, Array<(token: string) => void>>()
const mailer = pds.ctx.mailer
const sendPlcOperation = mailer.sendPlcOperation.bind(mailer)
mailer.sendPlcOperation = async (params, mailOpts) => {
  await sendPlcOperation(params, mailOpts)
  tokens.set(mailOpts.to, params.token)
  for (const resolve of tokenWaiters.get(mailOpts.to) ?? []) resolve(params.token)
  tokenWaiters.delete(mailOpts.to)
}
const plcToken = (email: string) =>
  new Promise<string>((resolve) => {
    const known = tokens.get(email)
    if (known) resolve(known)
    else tokenWaiters.set(email, [...(tokenWaiters.get(email) ?? []), resolve])
  })

// The engine keeps no history of its stages: sample the durable record, which it updates at
// each stage and after each frame, often enough to split the pull into its phases.
const timelines = new Map<string, { events: TimelineEvent[]; sample: () => Promise<void> }>()
const watch = (transferId: string) => {
  const events: TimelineEvent[] = []
  const seen = new Set<string>()
  const mark = (event: string) => {
    if (seen.has(event)) return
    seen.add(event)
    events.push({ at: epochMs(), event })
  }
  const sample = async () => {
    const t = await pds.engine.get(transferId)
    if (!t) return
    if (t.status === 'importing') mark('stream open')
    if (t.progress.framesReceived > 0) mark('first frame')
    if (t.repo) mark('repo imported')
    if (t.progress.blobsReceived > 0) mark('first blob')
    if (t.endOfStream) mark('stream ended')
    mark(`stage ${t.stage}`)
    if (t.status === 'completed' || t.status === 'failed' || t.stage === 'awaitingPlcToken')
      clearInterval(timer)
  }
  const timer = setInterval(sample, 20)
  timelines.set(transferId, { events, sample })
}

const inspector = new Session()
const profile = async (action: 'start' | 'stop', path?: string) => {
  if (action === 'start') {
    inspector.connect()
    await inspector.post('Profiler.enable')
    await inspector.post('Profiler.start')
    return
  }
  const { profile } = await inspector.post('Profiler.stop')
  if (path) await writeFile(path, JSON.stringify(profile))
  inspector.disconnect()
}

type Message = {
  id: number
  profile?: 'start' | 'stop'
  path?: string
  plcToken?: string
  watch?: string
  wait?: string
  transfer?: string
  rss?: boolean
  stop?: boolean
}
process.on('message', (msg: Message) => {
  const run = async (): Promise<unknown> => {
    if (msg.plcToken) return plcToken(msg.plcToken)
    if (msg.watch) return watch(msg.watch)
    if (msg.wait) {
      const transfer: InboundTransfer = await pds.engine.wait(msg.wait)
      const timeline = timelines.get(msg.wait)
      await timeline?.sample() // the end of the pull, which the last interval may have missed
      const events = [...(timeline?.events ?? []), ...sinkEvents].sort((x, y) => x.at - y.at)
      return { transfer, timeline: events }
    }
    if (msg.transfer) return pds.engine.get(msg.transfer)
    if (msg.profile) return profile(msg.profile, msg.path)
    if (msg.rss) return { maxRssMiB: peakRssMiB() }
    if (msg.stop) {
      await pds.close()
      setImmediate(() => process.exit(0))
      return true
    }
    throw new Error(`unknown message ${JSON.stringify(msg)}`)
  }
  run().then(
    (result) => process.send?.({ id: msg.id, result }),
    (err: unknown) => process.send?.({ id: msg.id, error: String(err) }),
  )
})
process.send?.({ ready: true, url: pds.url, serviceDid: pds.serviceDid })
