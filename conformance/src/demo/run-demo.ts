/**
 * The main job: real migrations into a reference PDS (B) through /migrate, one from each kind of
 * source (`USAGE` says which), each moved account checked on arrival, and a report with timings
 * per source. `--keep-running` leaves the PDSes up with the /migrate URL and a second account to
 * move by hand.
 */
import { parseArgs } from 'node:util'
import { type SeededAccount, seedReferenceAccount } from '../fixtures/seed-reference-account.ts'
import { freePort } from '../harness/destination-server.ts'
import { startDraftPds } from '../harness/draft-pds.ts'
import { headlessAuthorize } from '../harness/headless-oauth.ts'
import { listAllRecords } from '../harness/list-records.ts'
import { startPlainPds } from '../harness/plain-pds.ts'
import { startReferencePdsPair } from '../harness/reference-pds.ts'
import { startTlsFront, type TlsFront } from '../harness/tls-front.ts'

const USAGE = `usage: bash scripts/dev demo [--from v1|draft|plain|all] [--keep-running] [--posts N] [--images N]

Moves one account into PDS B through its /migrate from each kind of source, then checks it at B
(records and blobs identical, PLC, the old server deactivated, email, preferences, a new post):
  v1     a reference PDS with our transfer endpoints: the encrypted stream (0014)
  draft  a reference PDS serving only the current draft (0015): its JSON exportAccount for the
         private state, the data over the sync endpoints, its completeTransfer
  plain  a reference PDS with nothing of ours installed: the sync endpoints, its own PLC code
  all    each of the three in turn (the default)
--keep-running  leave the PDSes up afterwards, with a second account to move by hand in a browser
--posts N, --images N  the size of each account (default 1000 and 40)
--loopback      serve B's pages on http://localhost only (any browser reaches them; sources then
                show B as "an application on your device"). By default, when this machine lets
                it bind port 443 and has openssl, B's pages and OAuth client are served as a
                deployment serves them, at https://b.pds-transfer.internal through a TLS proxy (the name
                resolves to a loopback address in this process and in the Chromium command shown)`

const { values: args } = parseArgs({
  options: {
    help: { type: 'boolean', short: 'h', default: false },
    'keep-running': { type: 'boolean', default: false },
    posts: { type: 'string', default: '1000' },
    images: { type: 'string', default: '40' },
    from: { type: 'string', default: 'all' },
    loopback: { type: 'boolean', default: false },
  },
})
if (args.help) {
  console.log(USAGE)
  process.exit(0)
}
/** The kinds of source, in the order `all` moves them. */
const KINDS = ['v1', 'draft', 'plain'] as const
type Kind = (typeof KINDS)[number]
const kinds = (args.from === 'all' ? [...KINDS] : [args.from]) as Kind[]
for (const kind of kinds) {
  if (!KINDS.includes(kind)) {
    console.error(`--from must be v1, draft, plain or all, not ${JSON.stringify(kind)}\n\n${USAGE}`)
    process.exit(2)
  }
}
/** Who is moved from each kind of source, and how (for the log and the report). */
const MOVED: Record<Kind, { name: string; pull: string; completion: string }> = {
  v1: { name: 'alice', pull: 'encrypted pull', completion: 'completeTransfer' },
  draft: {
    name: 'dana',
    pull: "the draft's exportAccount (private state), then a pull over the sync endpoints",
    completion: "the draft's completeTransfer",
  },
  plain: { name: 'carol', pull: 'pull over the sync endpoints', completion: 'signPlcOperation' },
}

/** B's public name when served as deployed (`.internal`: for private use, never in public DNS). */
const B_NAME = 'b.pds-transfer.internal'
const checks: { name: string; ok: boolean; detail: string }[] = []
const check = (name: string, ok: boolean, detail = '') => {
  checks.push({ name, ok, detail })
  console.log(`  ${ok ? '✓' : '✗'} ${name}${detail ? ` (${detail})` : ''}`)
}
const timings: [string, number][] = []
let last = performance.now()
const lap = (name: string) => {
  const now = performance.now()
  timings.push([name, now - last])
  last = now
}
const collections = ['app.bsky.feed.post', 'app.bsky.graph.follow']

console.log('Starting a PLC directory and two reference PDSes (@atproto/pds 0.5.35) on loopback…')
// B as deployed: its pages and OAuth client at https://B_NAME, so that sources fetch its client
// metadata (spec D26); on a machine that does not allow it, the loopback client instead.
const bPort = await freePort()
let front: TlsFront | undefined
if (!args.loopback) {
  front = await startTlsFront(B_NAME, `http://127.0.0.1:${bPort}`).catch((err: Error) => {
    console.log(`  (B's pages stay on http://localhost: ${err.message}; --loopback says this is wanted)`)
    return undefined
  })
}
const pair = await startReferencePdsPair({
  onPlcToken: (did, token) => console.log(`  [mail] PLC code for ${did}: ${token}`),
  ports: [await freePort(), bPort],
  ...(front && { b: { pagesUrl: front.url, oauthClient: { name: 'PDS B (the pds-transfer demo)' } } }),
})
const { a, b } = pair
/** Where people (and the demo's requests) reach B's pages. */
const pages = front?.url ?? b.url
const draft = kinds.includes('draft') ? await startDraftPds(pair.plc.namedUrl) : undefined
const plain = kinds.includes('plain') ? await startPlainPds(pair.plc.namedUrl) : undefined
console.log(
  `  PDS A (source, v1)  ${a.url}\n${draft ? `  PDS D (source, the current draft only) ${draft.url}\n` : ''}${plain ? `  PDS P (source, plain: nothing of ours installed) ${plain.url}\n` : ''}  PDS B (destination) ${b.url}${front ? `, its pages and OAuth client at ${front.url} (${front.address}:443)` : ''}\n  PLC directory       ${pair.plc.url}`,
)
lap('start PLC + PDSes')
const closeAll = async () => {
  await Promise.allSettled([draft?.close(), plain?.close()])
  await pair.close()
  await front?.close()
}
if (front) {
  // What a source's consent screen reads of B (spec D26), as a source fetches it.
  const metadata = (await (await fetch(`${front.url}/oauth-client-metadata.json`)).json()) as {
    client_id?: string
    client_name?: string
  }
  check(
    "B's OAuth client metadata served at its https address",
    metadata.client_id === `${front.url}/oauth-client-metadata.json` && metadata.client_name !== undefined,
    `${metadata.client_name}`,
  )
}

let exitCode = 0
/** Per source: how long its move took from seeding to the last check, and its checks. */
const perSource: { kind: Kind; seconds: number; passed: number; of: number; error?: string }[] = []
for (const kind of kinds) {
  const started = performance.now()
  const before = checks.length
  let error: string | undefined
  try {
    await moveOne(kind)
  } catch (err) {
    exitCode = 1
    error = (err as Error).message
    console.error(`\n✗ ${(err as Error).stack ?? err}`)
  }
  const own = checks.slice(before)
  perSource.push({
    kind,
    seconds: (performance.now() - started) / 1000,
    passed: own.filter((c) => c.ok).length,
    of: own.length,
    ...(error && { error }),
  })
}

/** One account seeded at the source of `kind`, moved to B through /migrate, checked at B. */
async function moveOne(kind: Kind): Promise<void> {
  const sourceUrl = { v1: a.url, draft: draft?.url, plain: plain?.url }[kind] as string
  const { name, pull, completion } = MOVED[kind]
  console.log(
    `\n[${kind}] Seeding ${name}.test: ${args.posts} posts, ${args.images} images, 50 follows, preferences, email…`,
  )
  const account = await seedReferenceAccount(sourceUrl, {
    handle: `${name}.test`,
    email: `${name}@example.com`,
    password: `${name}-demo-password`,
    posts: Number(args.posts),
    images: Number(args.images),
    imageSide: 160,
    follows: 50,
  })
  const before = new Map<string, unknown[]>()
  for (const c of collections) before.set(c, await listAllRecords(sourceUrl, account.did, c))
  lap(`[${kind}] seed the account`)

  console.log(
    `[${kind}] Migrating ${account.did} to B: /migrate → OAuth sign-in at its server → ${pull} → PLC code…`,
  )
  const authorize = await fetch(`${pages}/migrate/authorize`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: pages },
    body: new URLSearchParams({ did: account.did }),
  })
  const authorizeUrl = new URL(authorize.headers.get('location') ?? '')
  const callback = await headlessAuthorize(authorizeUrl, {
    username: account.handle,
    password: account.password,
  })
  lap(`[${kind}] OAuth sign-in at the source (PAR, PKCE, DPoP)`)
  const started = await fetch(callback, { redirect: 'manual' })
  const transferId = new URL(started.headers.get('location') ?? '').pathname.split('/').at(-1) as string
  let transfer = await b.engine.get(transferId)
  // A draft or plain source is asked for the code just after the data is held (the stage comes
  // first): its mailbox is read once the request is recorded, or the code may not exist yet.
  const waiting = (t: typeof transfer) =>
    t !== undefined &&
    t.status !== 'failed' &&
    (t.stage !== 'awaitingPlcToken' ||
      (kind !== 'v1' && t.plcCodeRequestedAt === undefined && t.failure === undefined))
  while (waiting(transfer)) {
    await new Promise((r) => setTimeout(r, 100))
    transfer = await b.engine.get(transferId)
  }
  if (transfer?.stage !== 'awaitingPlcToken') {
    throw new Error(`transfer stopped: ${JSON.stringify(transfer?.failure ?? transfer?.status)}`)
  }
  const p = transfer.progress
  console.log(
    `  pulled ${(p.bytesReceived / 1048576).toFixed(1)} MiB, ${p.records ?? 0} records, ${p.blobsReceived + p.blobsReconciled} blobs${kind === 'v1' ? ` in ${p.framesReceived} frames (end of stream: ${transfer.endOfStream})` : ''}`,
  )
  lap(`[${kind}] pull, verify, import`)

  if (kind === 'draft')
    console.log(`  capabilities agreed with the draft source: ${transfer.capabilities?.join(', ')}`)
  const token =
    kind === 'v1'
      ? (pair.plcTokens.get(account.did)?.at(-1) ?? '')
      : ((await (kind === 'draft' ? draft : plain)?.plcToken(account.did)) ?? '')
  const done = await fetch(`${pages}/migrate/transfer/${transferId}/complete`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: pages },
    body: new URLSearchParams({ token }),
  })
  transfer = await b.engine.get(transferId)
  if (done.status >= 400 || transfer?.status !== 'completed') {
    throw new Error(`completion failed: ${JSON.stringify(transfer?.failure ?? transfer?.status)}`)
  }
  lap(`[${kind}] ${completion}, PLC operation, activation`)

  console.log(`[${kind}] Checking the account on B:`)
  await verify(account, before, sourceUrl)
  lap(`[${kind}] verification`)
}

const failed = checks.filter((c) => !c.ok)
if (failed.length > 0) exitCode = 1
console.log('\nReport')
for (const [name, ms] of timings) console.log(`  ${(ms / 1000).toFixed(2).padStart(7)} s  ${name}`)
for (const r of perSource) {
  console.log(
    `  [${r.kind}] ${MOVED[r.kind].name}.test: ${r.seconds.toFixed(2)} s, ${r.passed}/${r.of} checks passed${r.error ? `, stopped: ${r.error}` : ''}`,
  )
}
console.log(
  exitCode === 0
    ? `\n${checks.length} checks passed: ${kinds.length === 1 ? 'the account' : `each of the ${kinds.length} accounts (${kinds.join(', ')})`} moved with every record and blob intact.`
    : `\nFAILED: ${failed.map((c) => c.name).join('; ') || 'see the error above'}`,
)

if (args['keep-running'] && exitCode === 0) {
  const bob = await seedReferenceAccount(a.url, {
    handle: 'bob.test',
    email: 'bob@example.com',
    password: 'bob-demo-password',
    posts: 100,
    images: 5,
    follows: 10,
  })
  console.log(`
Both PDSes keep running. Try it yourself:
  1. open ${pages}/migrate${
    front
      ? ` in a browser that knows the name, e.g.
     chromium ${front.chromiumArgs.map((a) => `'${a}'`).join(' ')} ${front.url}/migrate
     (or run the demo with --loopback and open ${b.url}/migrate in any browser)`
      : ''
  }
  2. enter ${bob.handle} (or ${bob.did})
  3. sign in at A as ${bob.handle} / bob-demo-password
  4. the PLC code appears here as "[mail]" when the data has arrived
Ctrl-C stops everything.`)
  const stop = async () => {
    await closeAll()
    process.exit(0)
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
} else {
  await closeAll()
  process.exit(exitCode)
}

async function verify(
  alice: SeededAccount,
  before: Map<string, unknown[]>,
  sourceUrl: string,
): Promise<void> {
  for (const c of collections) {
    const after = await listAllRecords(b.url, alice.did, c)
    check(
      `${c} records identical`,
      JSON.stringify(after) === JSON.stringify(before.get(c)),
      `${after.length} records`,
    )
  }
  let identical = 0
  for (const [cid, bytes] of alice.blobs) {
    const res = await fetch(`${b.url}/xrpc/com.atproto.sync.getBlob?did=${alice.did}&cid=${cid}`)
    const got = Buffer.from(await res.arrayBuffer())
    if (res.ok && got.equals(Buffer.from(bytes)) && res.headers.get('content-type') === 'image/png')
      identical++
  }
  check(
    'blobs byte-identical, served as image/png',
    identical === alice.blobs.size,
    `${identical}/${alice.blobs.size}`,
  )

  const data = (await (await fetch(`${pair.plc.url}/${alice.did}/data`)).json()) as {
    services: { atproto_pds: { endpoint: string } }
    verificationMethods: { atproto: string }
  }
  check(
    'PLC names B as the PDS',
    data.services.atproto_pds.endpoint === b.url,
    data.services.atproto_pds.endpoint,
  )
  const key = (await b.pds.ctx.actorStore.keypair(alice.did)).did()
  check("PLC signing key is B's new key", data.verificationMethods.atproto === key)

  const onA = await fetch(`${sourceUrl}/xrpc/com.atproto.sync.getRepo?did=${alice.did}`)
  const error = ((await onA.json()) as { error?: string }).error
  check('the old server answers RepoDeactivated', error === 'RepoDeactivated', `HTTP ${onA.status} ${error}`)

  // Passwords do not move (D24): here the user resets theirs by email at B.
  const resetToken = await b.pds.ctx.accountManager.createEmailToken(
    alice.did as `did:plc:${string}`,
    'reset_password',
  )
  await post(b.url, 'com.atproto.server.resetPassword', { token: resetToken, password: 'alice-new-password' })
  const session = (await post(b.url, 'com.atproto.server.createSession', {
    identifier: alice.handle,
    password: 'alice-new-password',
  })) as { accessJwt: string; email?: string; active?: boolean }
  check(
    'email imported; sign-in at B works',
    session.email === alice.handle.replace(/\.test$/, '@example.com') && session.active === true,
  )
  const auth = `Bearer ${session.accessJwt}`
  const prefs = await fetch(`${b.url}/xrpc/app.bsky.actor.getPreferences`, {
    headers: { authorization: auth },
  })
  const { preferences } = (await prefs.json()) as { preferences: unknown[] }
  check('preferences identical', JSON.stringify(preferences) === JSON.stringify(alice.preferences))
  const write = await post(
    b.url,
    'com.atproto.repo.createRecord',
    {
      repo: alice.did,
      collection: 'app.bsky.feed.post',
      record: { $type: 'app.bsky.feed.post', text: 'hello from B', createdAt: new Date().toISOString() },
    },
    auth,
  )
  check('new post written at B', typeof (write as { uri?: unknown }).uri === 'string')
}

async function post(base: string, nsid: string, body: unknown, authorization?: string): Promise<unknown> {
  const res = await fetch(`${base}/xrpc/${nsid}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(authorization && { authorization }) },
    body: JSON.stringify(body),
  })
  const json = (await res.json().catch(() => ({}))) as Record<string, unknown>
  if (!res.ok) throw new Error(`${nsid}: HTTP ${res.status}: ${JSON.stringify(json)}`)
  return json
}
