import * as plc from '@did-plc/lib'
import {
  CONTENT_TYPE,
  generateTransferKey,
  NSID,
  parseWellKnown,
  publicJwk,
  type TransferPrivateJwk,
  WELL_KNOWN_PATH,
} from '@pds-transfer/core'
import { bearerSourceClient, checkPlcMove, createTransferId } from '@pds-transfer/destination'
import { analyzeExport, type ExportAnalysis, type ViolationCode } from './analyze-export.ts'
import { type Check, CheckFailed, cacheControlEvidence, expectThat, httpsEvidence, skip } from './check.ts'
import { recordExport } from './export-capture.ts'
import type { SourceTarget } from './source-target.ts'
import { anonymousClient, describe, expectXrpcError, type XrpcAnswer, xrpc } from './xrpc-call.ts'

const STATUSES = ['pending', 'exporting', 'importing', 'completing', 'completed', 'failed']

/** The source's well-known document (fetched once per target). */
async function wellKnown(t: SourceTarget) {
  const res = await fetch(`${t.url.replace(/\/$/, '')}${WELL_KNOWN_PATH}`, {
    signal: AbortSignal.timeout(t.timeoutMs ?? 30_000),
  })
  const text = await res.text()
  return { res, text }
}

/** The target's DID signing key: given, or resolved from its PLC directory (and remembered). */
export async function signingKeyOf(t: Pick<SourceTarget, 'did' | 'plcUrl' | 'signingKey'>): Promise<string> {
  if (t.signingKey) return t.signingKey
  const data = await new plc.Client(t.plcUrl ?? 'https://plc.directory').getDocumentData(t.did)
  const key = data.verificationMethods.atproto
  if (!key) throw new Error(`${t.did} has no #atproto verification method`)
  t.signingKey = key
  return key
}

/**
 * The one export the stream checks look at: recorded once (raw bytes, as `capture` writes
 * them), then decoded by the independent analyzer. A failure to record is every stream check's
 * failure, with the same evidence.
 */
async function recorded(t: SourceTarget): Promise<{ analysis: ExportAnalysis; transferId: string }> {
  if (!t.recorded) {
    let extensions = t.extensions
    if (!extensions) {
      const { text } = await wellKnown(t)
      try {
        extensions = parseWellKnown(JSON.parse(text)).document.extensions ?? []
      } catch {
        extensions = []
      }
    }
    const signingKey = await signingKeyOf(t)
    const sent = t.plcTokenSent
    const before = await sent?.()
    let atResponse = false
    const capture = await recordExport({
      client: t.client,
      did: t.did,
      transferId: createTransferId(),
      recipientKey: t.recipientKey,
      ...(extensions.length > 0 && { extra: { extensions } }),
      signingKey,
      ...(t.timeoutMs && { timeoutMs: t.timeoutMs }),
      ...(sent && {
        onResponse: async () => {
          atResponse = await sent()
        },
      }),
    })
    t.recorded = {
      capture,
      analysis: await analyzeExport(capture, { signingKey }),
      ...(before !== undefined && { plcTokenSent: { before, atResponse } }),
    }
  }
  const { capture, analysis } = t.recorded
  if (capture.response.status !== 200) {
    throw new CheckFailed(
      `exportAccount answered HTTP ${capture.response.status}: ${Buffer.from(capture.body).toString('utf8').slice(0, 300)}`,
    )
  }
  return { analysis, transferId: capture.transferId }
}

/** Fails with the violations of these codes, or returns `ok`. */
function noViolations(a: ExportAnalysis, codes: ViolationCode[], ok: string): string {
  const found = a.violations.filter((x) => codes.includes(x.code))
  if (found.length > 0) throw new CheckFailed(found.map((x) => `${x.code}: ${x.message}`).join('; '))
  return ok
}

const frameSummary = (a: ExportAnalysis) => {
  const counts = new Map<string, number>()
  for (const f of a.frames) counts.set(f.contentType, (counts.get(f.contentType) ?? 0) + 1)
  return [...counts].map(([type, n]) => `${n} x ${type.replace('application/', '')}`).join(', ')
}

/** The checks that call completeTransfer with the real code (they move the account: `complete`). */
export const COMPLETION_CHECKS: readonly string[] = [
  'source.complete.plc-operation',
  'source.errors.account-deactivated',
]

/**
 * Checks of a sending PDS (0014 §1, §2.1–2.6, Addendum; our D7, D11, E3, extensions.md).
 * Order matters: the stream checks share one recorded export, which completeTransfer then
 * finishes; the check that starts competing exports runs last.
 */
export const sourceChecks: readonly Check<SourceTarget>[] = [
  {
    id: 'source.transport.https',
    section: '§2.7',
    level: 'MUST',
    title: 'exportAccount and completeTransfer are served over HTTPS',
    run: async (t) => httpsEvidence(t.url),
  },
  {
    id: 'source.well-known.document',
    section: '§1.1, D11',
    level: 'SHOULD',
    title: 'GET /.well-known/atproto-transfer answers a valid document (version 1, service DID, algorithms)',
    async run(t) {
      const { res, text } = await wellKnown(t)
      expectThat(res.status === 200, `HTTP ${res.status}: ${text.slice(0, 200)}`)
      let parsed: ReturnType<typeof parseWellKnown>
      try {
        parsed = parseWellKnown(JSON.parse(text))
      } catch (err) {
        throw new CheckFailed(`not a valid document: ${(err as Error).message}`)
      }
      const { document } = parsed
      expectThat(
        document.algorithms.some((a) => a === 'HPKE-3' || a === 'HPKE-4'),
        `algorithms ${JSON.stringify(document.algorithms)} name neither HPKE-3 nor HPKE-4 (§1.3)`,
      )
      return `did ${document.did}, algorithms ${document.algorithms.join(', ')}, ${document.keys.keys.length} keys, extensions ${JSON.stringify(document.extensions ?? [])}`
    },
  },
  {
    id: 'source.well-known.cache-control',
    section: '§1.5',
    level: 'SHOULD',
    title: 'the document is served with Cache-Control: public, max-age=3600 (at most an hour)',
    async run(t) {
      const { res } = await wellKnown(t)
      if (res.status !== 200) skip(`no document (HTTP ${res.status})`)
      return cacheControlEvidence(res)
    },
  },
  {
    id: 'source.export.response-headers',
    section: '§2.1',
    level: 'MUST',
    title: 'exportAccount answers 200 application/octet-stream with Atproto-Transfer-Enc and -Algorithm',
    async run(t) {
      const { analysis } = await recorded(t)
      const h = t.recorded?.capture.response.headers ?? {}
      return noViolations(
        analysis,
        ['ContentTypeHeader', 'EncHeader', 'AlgorithmHeader'],
        `content-type ${h['content-type']}, algorithm ${h['atproto-transfer-algorithm']}, enc ${h['atproto-transfer-enc']?.length} base64url chars`,
      )
    },
  },
  {
    id: 'source.export.stream-complete',
    section: '§2.5',
    level: 'MUST',
    title: 'the body ends normally, exactly at a frame boundary, with well-formed frame headers',
    async run(t) {
      const { analysis } = await recorded(t)
      return noViolations(
        analysis,
        ['BodyIncomplete', 'TruncatedHeader', 'TruncatedFrame', 'InvalidContentType'],
        `${analysis.frames.length} frames, ${t.recorded?.capture.body.length} bytes`,
      )
    },
  },
  {
    id: 'source.export.frame-numbers',
    section: '§2.5',
    level: 'MUST',
    title: 'frames are numbered sequentially from 0',
    async run(t) {
      const { analysis } = await recorded(t)
      return noViolations(analysis, ['FrameNumbering'], `frames 0..${analysis.frames.length - 1}`)
    },
  },
  {
    id: 'source.export.aead',
    section: '§2.4',
    level: 'MUST',
    title:
      'every frame authenticates with the per-frame key, nonce and AAD (did, transferId, number, type) for our key',
    async run(t) {
      const { analysis } = await recorded(t)
      expectThat(analysis.frames.length > 0, 'the stream has no frames')
      return noViolations(
        analysis,
        ['FrameAuthFailed'],
        `${analysis.frames.length} frames authenticated (${analysis.algorithm})`,
      )
    },
  },
  {
    id: 'source.export.frame-order',
    section: '§2.1, D12',
    level: 'MUST',
    title:
      'one repo CAR frame first, then blobpacks, preferences, private state; no unknown or unasked frames',
    async run(t) {
      const { analysis } = await recorded(t)
      return noViolations(
        analysis,
        ['FrameOrder', 'UnknownContentType', 'ExtensionsHeader'],
        frameSummary(analysis),
      )
    },
  },
  {
    id: 'source.export.repo-car',
    section: '§2.5',
    level: 'MUST',
    title:
      "the repo CAR meets the repository spec as our destination verifies it (spec/repo-verification.md): commit signed by the DID's key and naming the DID, canonical MST, valid records",
    async run(t) {
      const { analysis } = await recorded(t)
      noViolations(analysis, ['RepoInvalid'], '')
      const car = analysis.car
      expectThat(car, 'no authenticated repo CAR frame to verify')
      expectThat(car.verified === 'ok', `CAR root ${car.root}: ${car.detail ?? car.verified}`)
      return `root ${car.root}, rev ${car.rev}, ${car.records} records, signed by ${t.signingKey}`
    },
  },
  {
    id: 'source.export.blobpack',
    section: 'Addendum',
    level: 'MUST',
    title:
      'blobpacks: ATPB magic, version 1, CIDv1/raw/sha-256 entries ending at the frame end, bytes matching CIDs',
    async run(t) {
      const { analysis } = await recorded(t)
      const packs = analysis.frames.filter((f) => f.contentType === CONTENT_TYPE.blobpack).length
      return noViolations(
        analysis,
        ['BlobpackInvalid'],
        `${packs} blobpacks, ${analysis.blobEntries} entries, ${analysis.blobs.size} distinct blobs`,
      )
    },
  },
  {
    id: 'source.export.blobs-complete',
    section: '§2.1',
    level: 'MUST',
    title: 'every blob referenced by a record of the CAR is in a blobpack (or deferred by the end manifest)',
    async run(t) {
      const { analysis } = await recorded(t)
      expectThat(
        analysis.car?.records !== undefined,
        'the CAR could not be read, so its blob references are unknown',
      )
      return noViolations(
        analysis,
        ['BlobMissing'],
        `${analysis.referencedBlobs.length} referenced, ${analysis.blobs.size} sent, ${analysis.manifest?.deferredBlobs.length ?? 0} deferred`,
      )
    },
  },
  {
    id: 'source.export.preferences',
    section: '§2.1, Minimum profile',
    level: 'MUST',
    title: 'a preferences frame, if sent, is a JSON array of app.bsky.actor.defs#preferences items',
    async run(t) {
      const { analysis } = await recorded(t)
      noViolations(analysis, ['PreferencesInvalid'], '')
      return analysis.preferences
        ? `${analysis.preferences.length} preferences`
        : 'no preferences frame (allowed when there are none)'
    },
  },
  {
    id: 'source.export.account-state',
    section: '§2.8',
    level: 'MUST',
    title: 'a private state frame, if sent, is a CBOR map with correctly typed known fields',
    async run(t) {
      const { analysis } = await recorded(t)
      noViolations(analysis, ['AccountStateInvalid'], '')
      return analysis.accountState
        ? `fields ${analysis.accountState.fields.join(', ')}`
        : 'no private state frame'
    },
  },
  {
    id: 'source.export.account-state.common-fields',
    section: '§2.8',
    level: 'SHOULD',
    title: 'private state is sent and carries the common fields (email, emailConfirmed)',
    async run(t) {
      const { analysis } = await recorded(t)
      const fields = analysis.accountState?.fields
      expectThat(fields, 'no private state frame')
      expectThat(fields.includes('email') && fields.includes('emailConfirmed'), `fields ${fields.join(', ')}`)
      return `fields ${fields.join(', ')}`
    },
  },
  {
    id: 'source.export.end-manifest',
    section: 'extensions.md',
    level: 'MUST',
    title: 'when end-manifest is confirmed, the last frame is a manifest agreeing with the stream',
    async run(t) {
      const { analysis } = await recorded(t)
      if (!analysis.extensions.includes('end-manifest')) skip('end-manifest was not negotiated')
      noViolations(analysis, ['EndManifestInvalid'], '')
      const m = analysis.manifest
      expectThat(m, 'no manifest')
      return `frames ${m.frames}, bytes ${m.bytes}, blobs ${m.blobs}, rev ${m.repoRev}`
    },
  },
  {
    id: 'source.export.plc-token-email',
    section: '§2.1, D9, E8',
    level: 'SHOULD',
    title:
      'the export makes the source email a PLC operation token once the data has left, not when the export starts',
    async run(t) {
      await recorded(t)
      const seen = t.recorded?.plcTokenSent
      if (!t.plcTokenSent || !seen) skip('not observable from outside: check the test account mailbox')
      if (seen.before)
        skip('a token had been sent before this export, so when this one was sent is not observable')
      expectThat(
        !seen.atResponse,
        'the token was sent before the export answered: it can expire before the data is in (erratum E8); send it once the stream is written (D9)',
      )
      // Sent as the stream ends; a source may finish sending just after the body.
      for (let i = 0; i < 50 && !(await t.plcTokenSent()); i++) await new Promise((r) => setTimeout(r, 100))
      expectThat(await t.plcTokenSent(), 'no PLC token was sent for the export')
      return 'no token when the export answered; one once its body had been sent'
    },
  },
  {
    id: 'source.status.export',
    section: '§2.3',
    level: 'SHOULD',
    title: 'getTransferStatus (optional) describes the export with a status of the §2.3 list',
    async run(t) {
      const { transferId } = await recorded(t)
      const res = await xrpc(t.client, NSID.getTransferStatus, { query: { transferId } })
      if (res.status === 404 && res.json?.error !== 'TransferNotFound')
        skip(`not implemented (${describe(res)})`)
      if (res.status === 501) skip(`not implemented (${describe(res)})`)
      expectThat(res.status === 200, describe(res))
      const body = res.json ?? {}
      expectThat(
        body.transferId === transferId && body.did === t.did,
        `wrong transfer: ${res.text.slice(0, 200)}`,
      )
      expectThat(
        STATUSES.includes(String(body.status)),
        `status ${JSON.stringify(body.status)} is not one of ${STATUSES.join(', ')}`,
      )
      return `status ${String(body.status)}`
    },
  },
  {
    id: 'source.auth.no-token',
    section: '§2.6, E3',
    level: 'MUST',
    title:
      'exportAccount without a token is refused: 401 (with WWW-Authenticate) or 403, TransferNotAuthorized',
    async run(t) {
      const res = await xrpc(anonymousClient(t.url), NSID.exportAccount, {
        body: exportInput(t),
      })
      expectThat(res.status === 401 || res.status === 403, describe(res))
      expectThat(res.json?.error === 'TransferNotAuthorized' || res.status === 401, describe(res))
      return `${describe(res)}${res.headers.get('www-authenticate') ? `, WWW-Authenticate: ${res.headers.get('www-authenticate')}` : ''}`
    },
  },
  {
    id: 'source.auth.invalid-token',
    section: '§2.6, E3',
    level: 'MUST',
    title: 'a token the source never issued is refused on exportAccount and completeTransfer (401 or 403)',
    async run(t) {
      const forged = bearerSourceClient(t.url, 'conformance-forged-token')
      const seen: string[] = []
      for (const [nsid, body] of [
        [NSID.exportAccount, exportInput(t)],
        [NSID.completeTransfer, completeInput(t, createTransferId(), 'AAAAA-BBBBB', [])],
      ] as const) {
        const res = await xrpc(forged, nsid, { body })
        expectThat(res.status === 401 || res.status === 403, `${nsid}: ${describe(res)}`)
        seen.push(`${nsid.split('.').at(-1)}: ${describe(res)}`)
      }
      return seen.join('; ')
    },
  },
  {
    id: 'source.auth.other-account',
    section: '§2.1, D22',
    level: 'MUST',
    title:
      "exportAccount for a DID other than the token's sub is 403 TransferNotAuthorized, also for an account the source hosts",
    async run(t) {
      const did = t.otherDid ?? 'did:plc:conformancexotheraccntzz'
      const res = await t.client.fetch(`/xrpc/${NSID.exportAccount}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...exportInput(t), did }),
        signal: AbortSignal.timeout(t.timeoutMs ?? 60_000),
      })
      if (res.ok) {
        await res.body?.cancel()
        throw new CheckFailed(`HTTP ${res.status}: the source exported ${did} to a token for ${t.did}`)
      }
      const text = await res.text()
      let json: Record<string, unknown> | undefined
      try {
        json = JSON.parse(text) as Record<string, unknown>
      } catch {
        json = undefined
      }
      const answer = describe({ status: res.status, headers: res.headers, json, text })
      const hosted = t.otherDid ? `${did}, hosted here` : `${did}, not hosted here`
      expectThat(
        res.status === 403 && json?.error === 'TransferNotAuthorized',
        res.status === 404
          ? `${answer} for ${hosted}: the DID was looked up before the token was compared with it (D22: 403 first, or whether this PDS hosts an account leaks)`
          : `expected 403 TransferNotAuthorized for ${hosted}, got ${answer}`,
      )
      return `${answer} (${hosted})`
    },
  },
  {
    id: 'source.auth.key-binding',
    section: 'D7',
    level: 'SHOULD',
    title:
      "an encryptionKey the destination (the OAuth client's origin) does not publish is refused with 403",
    async run(t) {
      const stranger = generateTransferKey({
        alg: t.recipientKey.alg,
        exp: Math.floor(Date.now() / 1000) + 3600,
      })
      const res = await xrpc(t.client, NSID.exportAccount, {
        body: exportInput(t, stranger),
      })
      expectThat(
        res.status === 403 && res.json?.error === 'TransferNotAuthorized',
        `the account would be encrypted to anyone's key: ${describe(res)}`,
      )
      return describe(res)
    },
  },
  {
    id: 'source.errors.invalid-input',
    section: '§2.1, XRPC',
    level: 'MUST',
    title:
      'malformed exportAccount input (bad transferId, unknown algorithm, missing key, not JSON) is 400 InvalidRequest',
    async run(t) {
      const key = publicJwk(t.recipientKey)
      const cases: [string, { body?: unknown; rawBody?: string }][] = [
        [
          'transferId not a UUIDv7',
          { body: { did: t.did, transferId: 'not-a-uuid', algorithm: key.alg, encryptionKey: key } },
        ],
        [
          'transferId a UUIDv4',
          {
            body: {
              did: t.did,
              transferId: '0195c8a2-7e28-4def-8c56-3a8b69e2d471',
              algorithm: key.alg,
              encryptionKey: key,
            },
          },
        ],
        [
          'algorithm HPKE-9',
          { body: { did: t.did, transferId: createTransferId(), algorithm: 'HPKE-9', encryptionKey: key } },
        ],
        ['no encryptionKey', { body: { did: t.did, transferId: createTransferId(), algorithm: key.alg } }],
        ['truncated JSON', { rawBody: '{"did": ' }],
      ]
      const seen: string[] = []
      for (const [name, input] of cases) {
        const res = await xrpc(t.client, NSID.exportAccount, input)
        expectThat(res.status === 400 && res.json?.error === 'InvalidRequest', `${name}: ${describe(res)}`)
        seen.push(`${name}: 400`)
      }
      return seen.join('; ')
    },
  },
  {
    id: 'source.errors.transfer-not-found',
    section: '§2.2, §2.6',
    level: 'MUST',
    title: 'completeTransfer for a transferId that was never exported is 404 TransferNotFound',
    async run(t) {
      const res = await xrpc(t.client, NSID.completeTransfer, {
        body: completeInput(t, createTransferId(), 'AAAAA-BBBBB', []),
      })
      return expectXrpcError(res, 404, 'TransferNotFound')
    },
  },
  {
    id: 'source.export.resume',
    section: 'extensions.md',
    level: 'MUST',
    title:
      'with resume negotiated, a resumed export of the same transfer leaves out the verified CAR and blobs',
    async run(t) {
      const { analysis, transferId } = await recorded(t)
      if (!analysis.extensions.includes('resume')) skip('resume was not negotiated')
      const root = analysis.car?.root
      expectThat(root, 'the first export had no verified CAR to resume from')
      const blobCursor = [...analysis.blobs.keys()].at(-1)
      const capture = await recordExport({
        client: t.client,
        did: t.did,
        transferId,
        recipientKey: t.recipientKey,
        extra: {
          extensions: analysis.extensions,
          resume: { repoCommit: root, ...(blobCursor && { blobCursor }) },
        },
        ...(t.timeoutMs && { timeoutMs: t.timeoutMs }),
      })
      expectThat(
        capture.response.status === 200,
        `HTTP ${capture.response.status}: ${Buffer.from(capture.body).toString('utf8').slice(0, 200)}`,
      )
      const resumed = await analyzeExport(capture, { signingKey: await signingKeyOf(t) })
      // Only what resuming is about: the frame rules themselves are judged on the first export
      // by their own checks, so a bug is named once.
      noViolations(
        resumed,
        ['HttpStatus', 'EncHeader', 'AlgorithmHeader', 'BodyIncomplete', 'FrameOrder', 'UnknownContentType'],
        '',
      )
      expectThat(
        !resumed.car,
        `the CAR (root ${resumed.car?.root}) was sent again though the head did not move`,
      )
      const again = [...resumed.blobs.keys()].filter((c) => analysis.blobs.has(c))
      expectThat(again.length === 0, `${again.length} blobs up to the cursor were sent again`)
      return `resumed stream: ${frameSummary(resumed) || 'no frames'}`
    },
  },
  {
    id: 'source.errors.invalid-plc-token',
    section: '§2.2, §2.6',
    level: 'MUST',
    title: 'completeTransfer with a wrong PLC token is 400 InvalidPlcToken and moves nothing',
    async run(t) {
      const { transferId } = await recorded(t)
      const res = await xrpc(t.client, NSID.completeTransfer, {
        body: completeInput(t, transferId, 'WRONG-TOKEN', await currentRotationKeys(t)),
      })
      expectThat(res.status === 400 && res.json?.error === 'InvalidPlcToken', describe(res))
      return `${describe(res)}; ${await stillActive(t)}`
    },
  },
  {
    id: 'source.complete.plc-operation',
    section: '§2.2, D8',
    level: 'MUST',
    title:
      'completeTransfer returns a valid next PLC operation that moves PDS and signing key and keeps the rotation keys',
    async run(t) {
      if (!t.complete)
        skip('not asked to complete (it deactivates the test account): pass --complete with the PLC token')
      const { transferId } = await recorded(t)
      const c = t.complete
      const rotationKeys = await currentRotationKeys(t)
      const res = await xrpc(t.client, NSID.completeTransfer, {
        body: completeInput(t, transferId, await c.plcToken(), rotationKeys),
      })
      return judgeSignedOperation(t, c, res, rotationKeys)
    },
  },
  {
    id: 'source.errors.account-deactivated',
    section: '§2.2, §2.6',
    level: 'MUST',
    title: 'after completeTransfer, a new exportAccount is 400 AccountDeactivated',
    async run(t) {
      if (!t.complete) skip('runs only after completeTransfer (--complete)')
      const res = await xrpc(t.client, NSID.exportAccount, {
        body: exportInput(t),
      })
      return expectXrpcError(res, 400, 'AccountDeactivated')
    },
  },
  {
    id: 'source.errors.transfer-already-active',
    section: '§2.6',
    level: 'MUST',
    title: 'a second destination exporting the account while a stream runs gets 409 TransferAlreadyActive',
    async run(t) {
      if (!t.otherClient) skip('needs a second authorized client from another destination')
      if (t.complete) skip('the account was moved by completeTransfer')
      const first = await t.client.fetch(`/xrpc/${NSID.exportAccount}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(exportInput(t)),
      })
      try {
        expectThat(first.status === 200, `the first export failed: HTTP ${first.status}`)
        const other = t.otherClient
        const second = await xrpc(other.client, NSID.exportAccount, {
          body: exportInput(t, other.recipientKey),
        })
        return expectXrpcError(second, 409, 'TransferAlreadyActive')
      } finally {
        await first.body?.cancel()
      }
    },
  },
]

/** Evidence that the account is still active at the source; throws CheckFailed when it is not. */
export async function stillActive(t: Pick<SourceTarget, 'url' | 'did' | 'accountActive'>): Promise<string> {
  if (t.accountActive) {
    expectThat(await t.accountActive(), 'the account is no longer active at the source')
    return 'account still active'
  }
  const head = await xrpc(anonymousClient(t.url), 'com.atproto.sync.getLatestCommit', {
    query: { did: t.did },
  })
  if (head.status === 200) return 'getLatestCommit still answers 200'
  expectThat(
    !['RepoDeactivated', 'RepoTakendown', 'RepoNotFound'].includes(String(head.json?.error)),
    `the account no longer serves its repo: ${describe(head)}`,
  )
  return `activity not observable (getLatestCommit: ${describe(head)})`
}

/** A well-formed exportAccount input for the target's account, encrypted to `key`. */
function exportInput(t: SourceTarget, key: TransferPrivateJwk = t.recipientKey) {
  return { did: t.did, transferId: createTransferId(), algorithm: key.alg, encryptionKey: publicJwk(key) }
}

/**
 * Judges completeTransfer's answer (v1 and draft): 200 with the valid next PLC operation, PDS and
 * signing key moved, exactly `rotationKeys` in this order (the signer's own key at most left out:
 * the user's keys keep their places, first, D8), nothing else changed; submitted when asked.
 */
export async function judgeSignedOperation(
  t: Pick<SourceTarget, 'did' | 'plcUrl'>,
  c: NonNullable<SourceTarget['complete']>,
  res: XrpcAnswer,
  rotationKeys: string[],
): Promise<string> {
  expectThat(res.status === 200, describe(res))
  const client = new plc.Client(t.plcUrl ?? 'https://plc.directory')
  const op = await checkPlcMove(client, res.json?.signedPlcOperation, {
    did: t.did,
    pdsEndpoint: c.newPdsEndpoint,
    signingKey: c.newSigningKey,
    rotationKey: c.newRotationKey,
    requestedRotationKeys: rotationKeys,
  }).catch((err: unknown) => {
    throw new CheckFailed(`the operation is not acceptable: ${(err as Error).message}`)
  })
  if (c.submit) await client.sendOperation(t.did, op as plc.Operation)
  return `valid next operation (prev ${op.prev}), rotation keys ${op.rotationKeys.join(', ')}${c.submit ? '; submitted to PLC' : '; not submitted'}`
}

/** The DID's current rotation keys, then the destination's (`complete.newRotationKey`) when completing. */
export async function currentRotationKeys(
  t: Pick<SourceTarget, 'did' | 'plcUrl' | 'complete'>,
): Promise<string[]> {
  const data = await new plc.Client(t.plcUrl ?? 'https://plc.directory').getDocumentData(t.did)
  return [...data.rotationKeys, ...(t.complete ? [t.complete.newRotationKey] : [])]
}

function completeInput(
  t: SourceTarget,
  transferId: string,
  plcSignatureToken: string,
  newRotationKeys: string[],
) {
  return {
    did: t.did,
    transferId,
    plcSignatureToken,
    newPdsEndpoint: t.complete?.newPdsEndpoint ?? 'https://destination.invalid',
    newSigningKey: t.complete?.newSigningKey ?? 'did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme',
    newRotationKeys,
  }
}
