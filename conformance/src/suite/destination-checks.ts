import * as plc from '@did-plc/lib'
import { parseWellKnown, WELL_KNOWN_PATH } from '@pds-transfer/core'
import { type Check, CheckFailed, cacheControlEvidence, expectThat, httpsEvidence, skip } from './check.ts'
import type { DestinationStatus, DestinationTarget } from './destination-target.ts'
import type { HostileAccount, HostileBehaviour } from './hostile-source.ts'

const DAY = 86400

async function document(t: DestinationTarget) {
  const res = await fetch(`${t.url.replace(/\/$/, '')}${WELL_KNOWN_PATH}`, {
    signal: AbortSignal.timeout(30_000),
  })
  const text = await res.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { res, text, json }
}

/** How a transfer ended, as the destination reports it. */
export type Verdict = { accepted: boolean; status: DestinationStatus }

/**
 * Polls the destination's status until it has a verdict: `failed` (refused), or the data is
 * verified and it waits for the PLC token (`stage: awaitingPlcToken`, or status `completing` /
 * `completed` for a destination without our `stage` field).
 */
export async function verdict(
  t: Pick<DestinationTarget, 'status' | 'verdictTimeoutMs'>,
  transferId: string,
): Promise<Verdict> {
  const deadline = Date.now() + (t.verdictTimeoutMs ?? 120_000)
  let last: DestinationStatus | undefined
  while (Date.now() < deadline) {
    last = await t.status(transferId)
    if (last.status === 'failed') return { accepted: false, status: last }
    if (last.stage === 'awaitingPlcToken' || last.status === 'completing' || last.status === 'completed') {
      return { accepted: true, status: last }
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  // A destination still retrying a cut stream has not failed the check's point yet: say how to let it finish.
  const retrying =
    last?.stage === 'retrying'
      ? '; it is still retrying the broken stream: give its test deployment fewer retries, or pass a longer --timeout (conformance README, "Cut streams and the verdict timeout")'
      : ''
  throw new CheckFailed(
    `no verdict within ${t.verdictTimeoutMs ?? 120_000} ms; last status ${JSON.stringify(last)}${retrying}`,
  )
}

export const show = (s: DestinationStatus) =>
  `status ${s.status}${s.stage ? `/${s.stage}` : ''}${s.error ? `, ${s.error}` : ''}${s.reason ? ` (${s.reason.slice(0, 160)})` : ''}`

/** Whether the honest control transfer was imported: hostile checks prove nothing otherwise. */
const control = new WeakMap<DestinationTarget, Promise<Verdict>>()

/** The honest control transfer of this target, run once and shared by the checks. */
function controlTransfer(t: DestinationTarget): Promise<Verdict> {
  let run = control.get(t)
  if (!run) {
    run = runTransfer(t, 'honest').then((r) => r.result)
    control.set(t, run)
  }
  return run
}

async function runTransfer(t: DestinationTarget, behaviour: HostileBehaviour) {
  const account = await t.hostile.createAccount(behaviour)
  const transferId = await t.start({ did: account.did, sourceUrl: t.hostile.url, token: account.token })
  const result = await verdict(t, transferId)
  return { account, transferId, result }
}

/** Our destination's failure names (D14) that the checks expect. */
export type FailureName =
  | 'StreamInvalid'
  | 'StreamCut'
  | 'RepoInvalid'
  | 'BlobInvalid'
  | 'PreferencesInvalid'
  | 'AccountStateInvalid'
  | 'PlcOperationInvalid'

/**
 * Whether a refusal names the reason it must have (our D14 `error`); a destination that names
 * none passes on the refusal alone, said so in the evidence. The attacks keep the data intact
 * where they can (a flipped tag, a renumbered swap), so a destination that skips a check
 * accepts them whatever it reports.
 */
export function reasonEvidence(status: DestinationStatus, reasons: readonly FailureName[]): string {
  if (status.error === undefined) return `no failure reason reported (expected ${reasons.join(' or ')})`
  expectThat(
    (reasons as readonly string[]).includes(status.error),
    `refused for the wrong reason: ${show(status)}; expected ${reasons.join(' or ')} (it was caught by a later step: the check this case is about did not refuse it)`,
  )
  return `reason ${status.error}`
}

/** Evidence that nothing of what `account` must not leave behind is held (and it is inactive). */
export async function nothingKept(
  t: Pick<DestinationTarget, 'probe'>,
  account: Pick<HostileAccount, 'did' | 'mustNotStore'>,
): Promise<string> {
  const bad = account.mustNotStore
  const probe = await t.probe(account.did, bad.blobs)
  expectThat(
    !probe.active,
    `the account is active at the destination after a refused transfer (${probe.via})`,
  )
  if (bad.repo)
    expectThat(probe.repo !== true, `the refused repo was committed for ${account.did} (${probe.via})`)
  expectThat(!probe.blobs, `${probe.blobs} refused blobs were stored (${probe.via})`)
  const held = [
    'inactive',
    !bad.repo ? undefined : probe.repo === undefined ? 'repo not observable' : 'refused repo not committed',
    bad.blobs.length === 0
      ? undefined
      : probe.blobs === undefined
        ? 'blobs not observable'
        : `0/${bad.blobs.length} refused blobs stored`,
  ]
    .filter(Boolean)
    .join(', ')
  return `${held} (${probe.via})`
}

/**
 * A getBlob answer that does not hash to its CID (`account.mustNotStore.blobs[0]`) must not be
 * stored under it: either the pull failed by name with nothing kept (`refused`, the evidence),
 * or it was imported with that CID listed missing (`cid`, and the probe that saw it not stored).
 */
export async function judgeWrongBlob(
  t: Pick<DestinationTarget, 'probe'>,
  account: Pick<HostileAccount, 'did' | 'mustNotStore'>,
  result: Verdict,
): Promise<{ refused: string } | { cid: string; stored: Awaited<ReturnType<DestinationTarget['probe']>> }> {
  const [cid] = account.mustNotStore.blobs as [string]
  const stored = await t.probe(account.did, [cid])
  expectThat(
    !stored.blobs,
    `the getBlob answer was stored under ${cid}, which it does not hash to (${stored.via})`,
  )
  if (!result.accepted) {
    const reason = reasonEvidence(result.status, ['BlobInvalid'])
    return { refused: `${show(result.status)}; ${reason}; ${await nothingKept(t, account)}` }
  }
  expectThat(
    result.status.missingBlobs?.includes(cid),
    `imported with ${cid} neither stored nor listed missing: ${JSON.stringify(result.status.missingBlobs ?? [])}`,
  )
  return { cid, stored }
}

/** Skips unless the honest control transfer of this target was imported. */
async function needControl(t: DestinationTarget): Promise<void> {
  // The control runs first in the list; with `--only` it runs here, once.
  const honest = await controlTransfer(t).catch(() => undefined)
  if (!honest?.accepted) skip('the honest control transfer was not imported, so a refusal proves nothing')
}

/**
 * A hostile stream: the transfer must fail for one of `reasons` (when the destination names
 * one), and the account must stay inactive with nothing of the failing unit stored.
 */
function rejects(
  behaviour: HostileBehaviour,
  section: string,
  title: string,
  reasons: readonly FailureName[],
  options: { level?: 'MUST' | 'SHOULD'; needsExtension?: string } = {},
): Check<DestinationTarget> {
  return {
    id: `destination.rejects.${behaviour}`,
    section,
    level: options.level ?? 'MUST',
    title,
    async run(t) {
      await needControl(t)
      if (options.needsExtension) {
        const { json } = await document(t)
        const ext = (json as { extensions?: unknown })?.extensions
        if (!Array.isArray(ext) || !ext.includes(options.needsExtension))
          skip(`the destination does not advertise ${options.needsExtension}`)
      }
      const { account, result } = await runTransfer(t, behaviour)
      expectThat(!result.accepted, `the destination accepted the stream: ${show(result.status)}`)
      const reason = reasonEvidence(result.status, reasons)
      return `${show(result.status)}; ${reason}; ${await nothingKept(t, account)}`
    },
  }
}

/** Polls the status after the PLC code was entered until the completion has an outcome. */
export async function completionOutcome(
  t: Pick<DestinationTarget, 'status' | 'verdictTimeoutMs'>,
  transferId: string,
): Promise<DestinationStatus> {
  const deadline = Date.now() + (t.verdictTimeoutMs ?? 120_000)
  let last: DestinationStatus | undefined
  while (Date.now() < deadline) {
    last = await t.status(transferId)
    if (last.status === 'failed' || last.status === 'completed') return last
    // A destination may refuse the operation and wait for another code, saying why; without a
    // reason it may simply not have started yet.
    if (last.stage === 'awaitingPlcToken' && last.error) return last
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new CheckFailed(
    `no outcome of the completion within ${t.verdictTimeoutMs ?? 120_000} ms; last ${JSON.stringify(last)}`,
  )
}

/** What entering a hostile source's PLC code needs of a target, v1 or draft: its status, hooks and the source's "mailbox". */
type CompletingTarget = Pick<DestinationTarget, 'status' | 'verdictTimeoutMs' | 'probe' | 'complete'> & {
  hostile: { plcUrl: string; plcToken(did: string): string | undefined }
}

/** The PLC code the hostile source "emailed" for an account; `never` says what it means when none comes. */
async function plcCode(t: CompletingTarget, did: string, never: string): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const token = t.hostile.plcToken(did)
    if (token) return token
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new CheckFailed(`${never} for ${did}`)
}

/**
 * Enters the emailed code for a transfer whose source answers completeTransfer with a hostile
 * (validly signed) operation, and judges the outcome: not submitted to PLC, the transfer not
 * completed, the account inactive. `run` is the check's transfer, imported and waiting for the code.
 */
export async function judgeHostileOperation(
  t: CompletingTarget,
  run: { account: { did: string }; transferId: string; result: Verdict },
  noCode: string,
): Promise<string> {
  const { account, transferId, result } = run
  if (!t.complete) skip('no way to enter the PLC code: give --complete-hook (see README, destination mode)')
  expectThat(result.accepted, `the honest transfer of this case was refused: ${show(result.status)}`)
  const directory = new plc.Client(t.hostile.plcUrl)
  const before = await directory.getAuditableLog(account.did)
  await t.complete(transferId, await plcCode(t, account.did, noCode))
  const outcome = await completionOutcome(t, transferId)
  expectThat(outcome.status !== 'completed', `the transfer completed with the operation: ${show(outcome)}`)
  const after = await directory.getAuditableLog(account.did)
  expectThat(
    after.length === before.length,
    `the operation was submitted: the PLC log of ${account.did} grew from ${before.length} to ${after.length} entries`,
  )
  const reason = reasonEvidence(outcome, ['PlcOperationInvalid'])
  const probe = await t.probe(account.did, [])
  expectThat(!probe.active, `the account is active at the destination (${probe.via})`)
  return `${show(outcome)}; ${reason}; PLC log unchanged (${after.length} entries); inactive (${probe.via})`
}

/**
 * Checks of a receiving PDS (0014 §1, §2.4, §2.5, Addendum; extensions.md): its published
 * keys, then a control transfer from our honest source, then one hostile stream per check
 * from our malicious source, each of which must be refused without importing anything.
 */
export const destinationChecks: readonly Check<DestinationTarget>[] = [
  {
    id: 'destination.transport.https',
    section: '§2.7',
    level: 'MUST',
    title: 'the destination (its well-known document and keys) is served over HTTPS',
    run: async (t) => httpsEvidence(t.url),
  },
  {
    id: 'destination.well-known.document',
    section: '§1, §1.1',
    level: 'MUST',
    title: 'GET /.well-known/atproto-transfer answers a valid version 1 document',
    async run(t) {
      const { res, text, json } = await document(t)
      expectThat(res.status === 200, `HTTP ${res.status}: ${text.slice(0, 200)}`)
      expectThat(json !== undefined, `not JSON: ${text.slice(0, 200)}`)
      try {
        const { document: doc } = parseWellKnown(json)
        return `did ${doc.did}, algorithms ${doc.algorithms.join(', ')}, ${doc.keys.keys.length} usable keys`
      } catch (err) {
        throw new CheckFailed(`invalid document: ${(err as Error).message}`)
      }
    },
  },
  {
    id: 'destination.well-known.keys',
    section: '§1.2, §1.3',
    level: 'MUST',
    title:
      'one or more keys, each an X25519 OKP JWK with kid, alg (a listed algorithm) and use "enc", none dropped',
    async run(t) {
      const { json } = await document(t)
      let parsed: ReturnType<typeof parseWellKnown>
      try {
        parsed = parseWellKnown(json, { now: Math.floor(Date.now() / 1000) })
      } catch (err) {
        throw new CheckFailed(`invalid document: ${(err as Error).message}`)
      }
      const { document: doc, droppedKeys } = parsed
      expectThat(
        droppedKeys.length === 0,
        `unusable keys: ${droppedKeys.map((k) => `${k.kid ?? '?'}: ${k.reason}`).join('; ')}`,
      )
      expectThat(doc.keys.keys.length > 0, 'no keys: a receiving PDS must publish one or more')
      const unlisted = doc.keys.keys.filter((k) => !doc.algorithms.includes(k.alg))
      expectThat(
        unlisted.length === 0,
        `keys for algorithms the document does not list: ${unlisted.map((k) => `${k.kid} ${k.alg}`).join(', ')}`,
      )
      expectThat(
        doc.algorithms.some((a) => a === 'HPKE-3' || a === 'HPKE-4'),
        `algorithms ${doc.algorithms.join(', ')}: HPKE-3 or HPKE-4 is required (§1.3)`,
      )
      return doc.keys.keys.map((k) => `${k.kid} (${k.alg})`).join(', ')
    },
  },
  {
    id: 'destination.well-known.key-expiry',
    section: '§1.2, §1.4',
    level: 'SHOULD',
    title: 'every key has an exp in the future, at most about 90 days (plus overlap) ahead',
    async run(t) {
      const { json } = await document(t)
      const keys = (json as { keys?: { keys?: { kid?: string; exp?: unknown }[] } })?.keys?.keys ?? []
      expectThat(keys.length > 0, 'no keys')
      const now = Math.floor(Date.now() / 1000)
      const bad = keys.filter((k) => typeof k.exp !== 'number' || k.exp <= now || k.exp > now + 120 * DAY)
      expectThat(
        bad.length === 0,
        `keys without a sensible exp: ${bad.map((k) => `${k.kid}: ${String(k.exp)}`).join(', ')}`,
      )
      return keys
        .map((k) => `${k.kid} expires in ${Math.round(((k.exp as number) - now) / DAY)} days`)
        .join(', ')
    },
  },
  {
    id: 'destination.well-known.hpke-3',
    section: '§1.3',
    level: 'SHOULD',
    title: 'HPKE-3 (the RECOMMENDED suite) is offered',
    async run(t) {
      const { json } = await document(t)
      const algorithms = (json as { algorithms?: unknown })?.algorithms
      expectThat(
        Array.isArray(algorithms) && algorithms.includes('HPKE-3'),
        `algorithms ${JSON.stringify(algorithms)}`,
      )
      return `algorithms ${(algorithms as string[]).join(', ')}`
    },
  },
  {
    id: 'destination.well-known.cache-control',
    section: '§1.5',
    level: 'SHOULD',
    title: 'the document is served with Cache-Control: public, max-age of at most 3600',
    async run(t) {
      const { res } = await document(t)
      return cacheControlEvidence(res)
    },
  },
  {
    id: 'destination.accepts.honest',
    section: '§2.1, §2.5',
    level: 'MUST',
    title:
      'control: an honest stream from our source is imported (the data verifies; it waits for the PLC token)',
    async run(t) {
      const result = await controlTransfer(t)
      expectThat(result.accepted, `the honest transfer failed: ${show(result.status)}`)
      return show(result.status)
    },
  },
  rejects(
    'tampered-car',
    '§2.4',
    "the repo CAR frame's AEAD tag flipped (its ciphertext intact) is refused",
    ['StreamInvalid'],
  ),
  rejects(
    'tampered-blobpack',
    '§2.4',
    "a blobpack frame's AEAD tag flipped is refused and its blobs are not stored",
    ['StreamInvalid'],
  ),
  rejects(
    'reordered-frames',
    '§2.4, §2.5',
    'two frames swapped and renumbered (nonce and AAD no longer match their place) are refused',
    ['StreamInvalid'],
  ),
  rejects(
    'content-type-swap',
    '§2.4',
    'a frame relabelled with another legal content type is refused (the type is in the AAD)',
    ['StreamInvalid'],
  ),
  rejects(
    'cut-mid-frame',
    '§2.5',
    'a stream that ends inside a frame is a failed transfer, not a shorter account',
    ['StreamCut'],
  ),
  rejects(
    'blob-wrong-cid',
    'Addendum',
    'a blob whose bytes do not hash to its CID is refused (and not stored)',
    ['BlobInvalid'],
  ),
  rejects('car-wrong-key', '§2.5', "a repo whose commit is not signed by the DID's key is refused", [
    'RepoInvalid',
  ]),
  rejects(
    'car-other-did',
    '§2.5',
    "a repo signed with the DID's key whose commit names another DID is refused",
    ['RepoInvalid'],
  ),
  rejects(
    'mst-invalid',
    '§2.5',
    "a repo signed with the DID's key whose MST holds its keys out of order is refused",
    ['RepoInvalid'],
  ),
  rejects(
    'car-block-mismatch',
    '§2.5',
    'a repo CAR block whose bytes do not hash to its CID (still a valid record) is refused',
    ['RepoInvalid'],
  ),
  rejects('repo-car-twice', '§2.1, D12', 'a second repo CAR frame is refused (the repo is one frame)', [
    'StreamInvalid',
  ]),
  rejects(
    'did-swap',
    '§2.4',
    "another account's (correctly encrypted) stream is refused (the DID is in the AAD)",
    ['StreamInvalid'],
  ),
  rejects(
    'transfer-id-swap',
    '§2.4',
    'a stream sealed for another transferId is refused (cross-session replay)',
    ['StreamInvalid'],
  ),
  rejects(
    'preferences-invalid',
    '§2.5',
    'preferences that are not an array of app.bsky.actor.defs#preferences are refused',
    ['PreferencesInvalid'],
  ),
  rejects(
    'preferences-item-invalid',
    '§2.5',
    'a preferences item that fails its app.bsky lexicon (adultContentPref enabled: "yes") is refused',
    ['PreferencesInvalid'],
  ),
  rejects('account-state-invalid', '§2.5, §2.8', 'private state that is not a CBOR map is refused', [
    'AccountStateInvalid',
  ]),
  rejects(
    'cut-at-boundary',
    'extensions.md, E1',
    'with end-manifest advertised, a stream cut at a frame boundary is refused',
    ['StreamCut'],
    { needsExtension: 'end-manifest' },
  ),
  {
    id: 'destination.reconcile.getblob-wrong-bytes',
    section: '§2.5, Addendum',
    level: 'MUST',
    title:
      'a blob left out of the stream whose getBlob answer does not hash to its CID is not stored under it (missing, or the transfer fails)',
    async run(t) {
      await needControl(t)
      const { account, result } = await runTransfer(t, 'getblob-wrong-bytes')
      const judged = await judgeWrongBlob(t, account, result)
      if ('refused' in judged) return judged.refused
      const { cid, stored } = judged
      const rest = account.blobs.filter((c) => c !== cid)
      const others = await t.probe(account.did, rest)
      expectThat(
        others.blobs === undefined || others.blobs === rest.length,
        `${rest.length - (others.blobs ?? 0)} of the ${rest.length} streamed blobs were lost (${others.via})`,
      )
      return `${show(result.status)}; ${cid} listed missing and not stored; ${
        others.blobs === undefined
          ? 'the streamed blobs are not observable'
          : `${rest.length}/${rest.length} streamed blobs stored`
      } (${stored.via})`
    },
  },
  {
    id: 'destination.complete.hostile-operation',
    section: '§2.2, D8',
    level: 'MUST',
    title:
      "a validly signed PLC operation from completeTransfer that drops the user's recovery key is not submitted, and the account stays inactive",
    async run(t) {
      await needControl(t)
      if (!t.complete)
        skip('no way to enter the PLC code: give --complete-hook (see README, destination mode)')
      return judgeHostileOperation(
        t,
        await runTransfer(t, 'complete-drops-recovery-key'),
        'the hostile source sent no PLC code',
      )
    },
  },
]
