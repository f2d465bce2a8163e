import { CAPABILITY, NSID, validateDraftExportOutput } from '@pds-transfer/core'
import { createTransferId, type SourceClient } from '@pds-transfer/destination'
import { type Check, CheckFailed, expectThat, httpsEvidence, skip } from './check.ts'
import { currentRotationKeys, judgeSignedOperation, stillActive } from './source-checks.ts'
import type { SourceTarget } from './source-target.ts'
import { anonymousClient, describe, type XrpcAnswer, xrpc } from './xrpc-call.ts'

/** A sending PDS serving the draft, and what the suite needs to exercise it. */
export interface DraftSourceTarget {
  url: string
  /** The test account (exported, never moved unless `complete` is given). */
  did: string
  /** Requests with the account's transfer scopes: a DPoP session's fetch, or a bearer token. */
  client: SourceClient
  /** PLC directory of the DID (default https://plc.directory). */
  plcUrl?: string
  /** Another account this source hosts, which the token does not cover (`sub` ≠ `did`). */
  otherDid?: string
  /** Whether the account is still active at the source (in-process; black-box uses getLatestCommit). */
  accountActive?: () => Promise<boolean>
  /** completeTransfer runs only with this (it deactivates the account at the source). */
  complete?: SourceTarget['complete']
  /** Per-request timeout in ms (default 60 000). */
  timeoutMs?: number
  /** Filled by the suite: the first export (shape and credentials checks), the completion's transfer. */
  state?: {
    export?: { transferId: string; asked: string[]; answer: XrpcAnswer }
    completion?: { transferId: string; code: string }
  }
}

/** What the suite asks for in the ordinary export: every token the draft defines. */
const ASKED = [CAPABILITY.base, CAPABILITY.preferences, CAPABILITY.resumable]
/** A token no source can know: it must be dropped from the answer, never an error (§7). */
const UNKNOWN = 'x-conformance-unknown'
/** Fields a private state must never carry (§5 "MUST NOT", D24). */
const CREDENTIALS = ['appPasswords', 'password', 'passwordHash', 'passwordScrypt', 'jwtSecret', 'totp']

/** The checks that call completeTransfer with the real code (they move the account: `complete`). */
export const DRAFT_COMPLETION_CHECKS: readonly string[] = [
  'source.draft.complete.refuses-dropping-user-key',
  'source.draft.complete.plc-operation',
]

const timeout = (t: DraftSourceTarget) => t.timeoutMs ?? 60_000

/** One draft exportAccount for the target's account (`capabilities` left out when `undefined`). */
function exportDraft(
  t: DraftSourceTarget,
  transferId: string,
  capabilities: string[] | undefined,
  options: { client?: SourceClient; did?: string } = {},
): Promise<XrpcAnswer> {
  return xrpc(options.client ?? t.client, NSID.exportAccount, {
    body: { did: options.did ?? t.did, transferId, ...(capabilities && { capabilities }) },
    timeoutMs: timeout(t),
  })
}

/** Evidence of a refused export, with a hint when another client's transfer is in flight. */
function refused(res: XrpcAnswer, what: string): string {
  const busy =
    res.status === 409 && res.json?.error === 'TransferAlreadyActive'
      ? ' (a transfer of this account by another OAuth client, i.e. another destination, is in flight: let it end or use another test account)'
      : ''
  return `${what}: ${describe(res)}${busy}`
}

/** The capabilities of a 200 answer, or CheckFailed with the answer as evidence. */
function answered(res: XrpcAnswer, what: string): string[] {
  expectThat(res.status === 200, refused(res, what))
  const caps = res.json?.capabilities
  expectThat(
    Array.isArray(caps) && caps.every((c) => typeof c === 'string'),
    `${what}: capabilities is not an array of strings: ${res.text.slice(0, 200)}`,
  )
  return caps as string[]
}

/** The first export, made once and shared by the shape and private-state checks. */
async function firstExport(t: DraftSourceTarget) {
  t.state ??= {}
  if (!t.state.export) {
    const transferId = createTransferId()
    t.state.export = { transferId, asked: ASKED, answer: await exportDraft(t, transferId, ASKED) }
  }
  return t.state.export
}

/** An export to complete and the PLC code for it, made once for both completion checks. */
async function completion(t: DraftSourceTarget, c: NonNullable<SourceTarget['complete']>) {
  t.state ??= {}
  if (!t.state.completion) {
    const transferId = createTransferId()
    const res = await exportDraft(t, transferId, ASKED)
    expectThat(res.status === 200, refused(res, 'the export to complete'))
    t.state.completion = { transferId, code: await c.plcToken() }
  }
  return t.state.completion
}

function completeBody(
  t: DraftSourceTarget,
  c: NonNullable<SourceTarget['complete']>,
  transferId: string,
  code: string,
  newRotationKeys: string[],
) {
  return {
    did: t.did,
    transferId,
    plcSignatureToken: code,
    newPdsEndpoint: c.newPdsEndpoint,
    newSigningKey: c.newSigningKey,
    newRotationKeys,
  }
}

/**
 * Checks of a sending PDS serving the draft. Order matters: the refusal checks run while the
 * account is active; completeTransfer (only with `complete`) runs last.
 */
export const draftSourceChecks: readonly Check<DraftSourceTarget>[] = [
  {
    id: 'source.draft.transport.https',
    section: '0015 §8',
    level: 'MUST',
    title: 'exportAccount, completeTransfer and the sync endpoints are served over HTTPS',
    run: async (t) => httpsEvidence(t.url),
  },
  {
    id: 'source.draft.export.answer',
    section: '0015 §2.1',
    level: 'MUST',
    title:
      'a draft exportAccount ({did, transferId, capabilities}) answers 200 application/json valid against the draft lexicon, echoing the transferId',
    async run(t) {
      const { transferId, answer } = await firstExport(t)
      expectThat(answer.status === 200, refused(answer, 'exportAccount'))
      const type = answer.headers.get('content-type') ?? ''
      expectThat(type.startsWith('application/json'), `Content-Type ${JSON.stringify(type)}, not JSON`)
      let out: ReturnType<typeof validateDraftExportOutput>
      try {
        out = validateDraftExportOutput(answer.json)
      } catch (err) {
        throw new CheckFailed(`${(err as Error).message}; got ${answer.text.slice(0, 200)}`)
      }
      expectThat(
        out.transferId === transferId,
        `transferId ${JSON.stringify(out.transferId)} is not the one asked for (${transferId})`,
      )
      expectThat(
        typeof out.privateState === 'object' && out.privateState !== null && !Array.isArray(out.privateState),
        `privateState is not an object: ${JSON.stringify(out.privateState).slice(0, 100)}`,
      )
      return `200 ${type}, capabilities ${JSON.stringify(out.capabilities)}, privateState fields ${Object.keys(out.privateState).join(', ') || '(none)'}`
    },
  },
  {
    id: 'source.draft.export.no-credentials',
    section: '0015 §5, D24',
    level: 'MUST',
    title: 'privateState never carries credentials (app passwords, password hashes, secrets)',
    async run(t) {
      const { answer } = await firstExport(t)
      if (answer.status !== 200) throw new CheckFailed(`no answer to look at: ${describe(answer)}`)
      const state = answer.json?.privateState
      const fields = state && typeof state === 'object' ? Object.keys(state) : []
      const leaked = fields.filter((f) => CREDENTIALS.includes(f))
      expectThat(leaked.length === 0, `privateState carries credentials: ${leaked.join(', ')}`)
      return `fields ${fields.join(', ') || '(none)'}`
    },
  },
  {
    id: 'source.draft.capabilities.intersection',
    section: '0015 §7',
    level: 'MUST',
    title:
      'capabilities answered are the intersection, in the order asked: unknown tokens dropped (no error), base kept, an omitted list read as ["base"]',
    async run(t) {
      const asked = [UNKNOWN, CAPABILITY.resumable, CAPABILITY.base, CAPABILITY.preferences]
      const caps = answered(await exportDraft(t, createTransferId(), asked), `asked ${JSON.stringify(asked)}`)
      const said = `asked ${JSON.stringify(asked)}, answered ${JSON.stringify(caps)}`
      expectThat(!caps.includes(UNKNOWN), `${said}: the unknown token was kept, not dropped`)
      const unasked = caps.filter((c) => !asked.includes(c))
      expectThat(unasked.length === 0, `${said}: ${unasked.join(', ')} answered but never asked for`)
      expectThat(new Set(caps).size === caps.length, `${said}: a token answered twice`)
      expectThat(caps.includes(CAPABILITY.base), `${said}: base is always supported, yet missing`)
      const positions = caps.map((c) => asked.indexOf(c))
      expectThat(
        positions.every((p, i) => i === 0 || p > (positions[i - 1] as number)),
        `${said}: not in the order asked`,
      )
      const omitted = answered(await exportDraft(t, createTransferId(), undefined), 'capabilities left out')
      expectThat(
        omitted.length === 1 && omitted[0] === CAPABILITY.base,
        `capabilities left out (read as ["base"]) answered ${JSON.stringify(omitted)}`,
      )
      return `${said}; left out: ${JSON.stringify(omitted)}`
    },
  },
  {
    id: 'source.draft.auth.probe',
    section: '0015 §4, dialect-draft §2',
    level: 'MUST',
    title:
      'exportAccount without a token (the destination’s detection probe) is refused 401/403 TransferNotAuthorized and starts nothing',
    async run(t) {
      const transferId = createTransferId()
      const probe = await exportDraft(t, transferId, undefined, { client: anonymousClient(t.url) })
      expectThat(
        (probe.status === 401 || probe.status === 403) && probe.json?.error === 'TransferNotAuthorized',
        `expected 401 or 403 TransferNotAuthorized (the draft's name for a missing token; destinations tell a draft source by it), got ${describe(probe)}`,
      )
      // Nothing recorded for that transferId: the account's own token may then start it afresh
      // (a transfer the probe had started would make this a repeat, refused without resumable).
      const after = await exportDraft(t, transferId, undefined)
      expectThat(
        after.status === 200,
        `after the probe, exportAccount with the token for the same transferId: ${describe(after)} (did the probe start a transfer?)`,
      )
      return `${describe(probe)}; the same transferId then started afresh with the token (200)`
    },
  },
  {
    id: 'source.draft.auth.other-account',
    section: '0015 §4, D22',
    level: 'MUST',
    title: "exportAccount for a DID other than the token's sub is 403 TransferNotAuthorized",
    async run(t) {
      const did = t.otherDid ?? 'did:plc:conformancexotheraccntzz'
      const res = await exportDraft(t, createTransferId(), undefined, { did })
      const hosted = t.otherDid ? `${did}, hosted here` : `${did}, not hosted here`
      if (res.status === 200)
        throw new CheckFailed(
          `HTTP 200: the source exported ${did} to a token for ${t.did} (privateState ${JSON.stringify(res.json?.privateState).slice(0, 100)})`,
        )
      expectThat(
        res.status === 403 && res.json?.error === 'TransferNotAuthorized',
        `expected 403 TransferNotAuthorized for ${hosted}, got ${describe(res)}`,
      )
      return `${describe(res)} (${hosted})`
    },
  },
  {
    id: 'source.draft.resume.requires-resumable',
    section: '0015 §7, dialect-draft §3',
    level: 'SHOULD',
    title:
      'a repeated exportAccount (same transferId) is a resume only when resumable is negotiated; otherwise TransferAlreadyActive',
    async run(t) {
      const transferId = createTransferId()
      const asked = [CAPABILITY.base, CAPABILITY.resumable]
      const first = answered(await exportDraft(t, transferId, asked), 'the first export')
      const seen: string[] = [`first: ${JSON.stringify(first)}`]
      if (first.includes(CAPABILITY.resumable)) {
        const resumed = await exportDraft(t, transferId, asked)
        expectThat(
          resumed.status === 200 && resumed.json?.transferId === transferId,
          `resumable was negotiated, yet the repeat with it was refused: ${describe(resumed)}`,
        )
        seen.push('repeat with resumable: 200 (a resume)')
      } else {
        const again = await exportDraft(t, transferId, asked)
        expectThat(
          again.status !== 200,
          `resumable was not negotiated, yet the repeat was accepted: ${describe(again)}`,
        )
        seen.push(`repeat: ${describe(again)}`)
      }
      const bare = await exportDraft(t, transferId, undefined)
      expectThat(
        bare.status === 409 && bare.json?.error === 'TransferAlreadyActive',
        `a repeat without resumable must be 409 TransferAlreadyActive (the draft gives it no other meaning), got ${describe(bare)}`,
      )
      seen.push(`repeat without resumable: ${describe(bare)}`)
      return seen.join('; ')
    },
  },
  {
    id: 'source.draft.complete.refuses-dropping-user-key',
    section: '0015 §2.2, D8',
    level: 'SHOULD',
    title:
      "completeTransfer whose newRotationKeys drops the user's rotation key is refused 400 InvalidRequest before the account is paused",
    async run(t) {
      const c = t.complete
      if (!c)
        skip('not asked to complete (it deactivates the test account): pass --complete with the PLC token')
      const current = await currentRotationKeys({ did: t.did, ...(t.plcUrl && { plcUrl: t.plcUrl }) })
      if (current.length < 2)
        skip(
          `the DID has one rotation key (${current[0]}), presumably the source's own: nothing of the user's to drop`,
        )
      const { transferId, code } = await completion(t, c)
      // What a literal draft destination sends: its own key only (spec/dialect-draft.md §8.2).
      const res = await xrpc(t.client, NSID.completeTransfer, {
        body: completeBody(t, c, transferId, code, [c.newRotationKey]),
        timeoutMs: timeout(t),
      })
      expectThat(
        res.status === 400 && res.json?.error === 'InvalidRequest',
        res.status === 200
          ? `the source signed an operation dropping the DID's rotation keys (${current.join(', ')}): the user loses their recovery key (not submitted)`
          : `expected 400 InvalidRequest, got ${describe(res)}`,
      )
      return `${describe(res)}; ${await stillActive(t)}`
    },
  },
  {
    id: 'source.draft.complete.plc-operation',
    section: '0015 §2.2, D8',
    level: 'MUST',
    title:
      "completeTransfer returns the valid next PLC operation: PDS and signing key moved, the user's rotation keys kept first, nothing else changed",
    async run(t) {
      const c = t.complete
      if (!c)
        skip('not asked to complete (it deactivates the test account): pass --complete with the PLC token')
      const { transferId, code } = await completion(t, c)
      const rotationKeys = await currentRotationKeys({
        did: t.did,
        complete: c,
        ...(t.plcUrl && { plcUrl: t.plcUrl }),
      })
      const res = await xrpc(t.client, NSID.completeTransfer, {
        body: completeBody(t, c, transferId, code, rotationKeys),
        timeoutMs: timeout(t),
      })
      return judgeSignedOperation(t, c, res, rotationKeys)
    },
  },
]
