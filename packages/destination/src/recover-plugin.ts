import { finished } from 'node:stream/promises'
import * as plc from '@did-plc/lib'
import multipart from '@fastify/multipart'
import { describeChange, describeRotationKeys, restoreChallenge } from '@pds-transfer/identity'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { accountDid } from './account-did.ts'
import { ExportUnreadable } from './export-files.ts'
import { esc, page } from './html-page.ts'
import type { InboundTransfer } from './inbound-transfer.ts'
import { accountOf, readPassword } from './migrate-form.ts'
import { liveProgress } from './migrate-html.ts'
import { type RecoverCopies, UPLOADED_COPY, UploadRefused } from './recover-copies.ts'
import { type RestorePageExtra, restorePage } from './recover-restore-page.ts'
import { recoverProofPage, recoverStartPage, type StartTyped } from './recover-start-page.ts'
import { isRestore } from './restore-admission.ts'
import { checkRestoreProof } from './restore-proof.ts'
import { copyUrl, probeCopy, restoreSourceClient } from './restore-source-client.ts'
import { EngineError, type TransferEngine } from './transfer-engine.ts'

export interface RecoverPluginOptions {
  engine: TransferEngine
  /** The PLC directory the engine submits to (its log shows the user their keys). */
  plc: plc.Client
  /** Our public URL and service DID, shown to the user, checked in form posts and in proofs. */
  publicUrl: string
  serviceDid: string
  /** Resolves a handle to a DID (default: `https://<handle>/.well-known/atproto-did`). */
  resolveHandle?: (handle: string) => Promise<string | undefined>
  /**
   * Where copies uploaded as files are kept while restored (give the same to the engine's
   * `restoreClient`, so a restore resumes after a restart). Without it only addresses are taken.
   */
  copies?: RecoverCopies
}

/**
 * The `/recover` web UI on the destination PDS: take an account back from a copy of its data
 * when its PDS is gone or hostile (spec/recovery.md). The user names the account and the copy;
 * the page shows the identity's keys and recent changes from PLC and checks the copy answers;
 * the user's key proves itself (signed in the page, or with `pds-identity prove`); the copy is
 * read and verified; then the key signs the PLC operation this server prepared, and the account
 * is activated here. The private key never leaves the browser or the user's machine. Register
 * it next to `migratePlugin`, whose password-reset routes the result page uses.
 */
export const recoverPlugin = fp(
  async (app: FastifyInstance, opts: RecoverPluginOptions) => {
    const origin = new URL(opts.publicUrl).origin
    const host = new URL(origin).host
    const view = { origin, host, canSetPassword: opts.engine.canSetPassword }
    const html = (reply: FastifyReply, body: string, status = 200) =>
      reply.code(status).type('text/html; charset=utf-8').header('cache-control', 'no-store').send(body)
    const problem = (reply: FastifyReply, message: string, status = 400) =>
      html(
        reply,
        page(
          'Something went wrong',
          `<p class="error" role="alert">${esc(message)}</p><p><a href="/recover">Start again</a></p>`,
        ),
        status,
      )
    const sameOrigin = (request: FastifyRequest) => request.headers.origin === origin
    const form = (request: FastifyRequest) => (request.body ?? {}) as Record<string, unknown>
    const text = (value: unknown) => String(value ?? '').trim()

    const copies = opts.copies
    const startPage = (typed?: StartTyped, error?: Parameters<typeof recoverStartPage>[2]) =>
      recoverStartPage(host, typed, error, copies !== undefined)

    app.get('/recover', async (_request, reply) => html(reply, startPage()))

    app.post('/recover/check', async (request, reply) => {
      if (!sameOrigin(request)) return problem(reply, 'This form must be sent from this site.', 403)
      const body = form(request)
      const copy = copies && body.copy === 'file' ? 'file' : 'address'
      const typed = { identifier: text(body.identifier), source: text(body.source), copy } as const
      const source = copy === 'file' ? UPLOADED_COPY : copyUrl(typed.source)
      if (!source)
        return html(
          reply,
          startPage(typed, {
            field: 'source',
            message: 'That is not a web address. Paste the address of your copy, starting with https://.',
          }),
          400,
        )
      const did = await accountDid(accountOf(typed.identifier), opts.resolveHandle)
      if (!did)
        return html(
          reply,
          startPage(typed, {
            field: 'identifier',
            message: `Could not find an account for "${typed.identifier}". If your old server is gone, your handle may no longer resolve: paste your DID (did:plc:…) instead.`,
          }),
          400,
        )
      const found = await proofInput(did, source, text(body.token))
      if ('field' in found) return html(reply, startPage(typed, found), 400)
      return html(reply, recoverProofPage(found))
    })

    /**
     * Starts the restore the proof form asks for: the proof is checked before anything is read,
     * and, for an uploaded copy, before the file is kept (`file` reads it only once the proof holds).
     */
    async function startFromProof(
      reply: FastifyReply,
      body: Record<string, unknown>,
      file?: () => Promise<{ source: string; path: string }>,
    ) {
      const did = text(body.did)
      const upload = text(body.source) === UPLOADED_COPY && copies !== undefined
      const source = upload ? UPLOADED_COPY : copyUrl(text(body.source))
      const token = upload ? '' : text(body.token)
      if (!did.startsWith('did:plc:') || !source) return problem(reply, 'This form is incomplete.')
      const again = async (error: string) => {
        const found = await proofInput(did, source, token)
        if ('field' in found) return problem(reply, found.message)
        return html(reply, recoverProofPage({ ...found, error }), 400)
      }
      const userKey = text(body.userKey)
      const signature = text(body.signature)
      if (!userKey || !signature)
        return again('Choose your rotation key file (or paste the key and signature from the command line).')
      let kept: { source: string; path: string } | undefined
      try {
        await checkRestoreProof(
          { serviceDid: opts.serviceDid, did, source },
          { challenge: Buffer.from(text(body.challenge), 'base64').toString('utf8'), signature, userKey },
        )
        if (upload && !file) return again('Choose the file of your copy.')
        kept = upload && file ? await file() : undefined
        const client = kept && copies ? await copies.client(kept.source, did) : undefined
        const t = await opts.engine
          .startRestore({
            did,
            client: client ?? restoreSourceClient(source, did, token || undefined),
            userKey,
          })
          .catch(async (err: unknown) => {
            await client?.close()
            throw err
          })
        if (client && copies) await copies.attach(t.transferId, client, opts.engine.wait(t.transferId))
        else if (copies) await copies.rememberAddress(t.transferId, source, token || undefined)
        return reply.redirect(`/recover/restore/${t.transferId}`, 303)
      } catch (err) {
        if (kept && copies) await copies.discard(kept.source)
        if (err instanceof UploadRefused) return again(err.message)
        if (err instanceof ExportUnreadable) return again(`Your copy could not be used: ${err.message}.`)
        const under = await opts.engine.unfinished(did)
        if (under && isRestore(under)) return reply.redirect(`/recover/restore/${under.transferId}`, 303)
        if (err instanceof EngineError) return again(err.message)
        throw err
      }
    }

    if (copies) {
      // Uploads no unfinished restore reads any more are removed at start and every hour.
      const sweep = () =>
        copies
          .sweep((id) => opts.engine.get(id))
          .catch((err: unknown) => app.log.error({ err }, 'sweeping /recover copies failed'))
      const timer = setInterval(sweep, 60 * 60_000).unref()
      app.addHook('onReady', async () => void sweep())
      app.addHook('onClose', async () => clearInterval(timer))
    }
    if (copies && !app.hasContentTypeParser('multipart/form-data'))
      await app.register(multipart, {
        throwFileSizeLimit: false,
        limits: { fileSize: copies.maxBytes, files: 1, fields: 20, fieldSize: 64 * 1024 },
      })

    app.post('/recover/start', async (request, reply) => {
      if (!sameOrigin(request)) return problem(reply, 'This form must be sent from this site.', 403)
      if (!copies || !request.isMultipart()) return startFromProof(reply, form(request))
      // The proof form with a file: its fields come first (the file input is the form's last), so
      // the proof is checked before a byte of the file is kept; a refused file is drained unread.
      const body: Record<string, unknown> = {}
      let answered: FastifyReply | undefined
      for await (const part of request.parts()) {
        if (part.type === 'field') {
          body[part.fieldname] = part.value
          continue
        }
        let kept = false
        if (!answered && part.fieldname === 'copy')
          answered = await startFromProof(reply, body, () => {
            kept = true
            return copies.save(part.file, () => part.file.truncated)
          })
        if (!kept) {
          part.file.resume()
          await finished(part.file).catch(() => {})
        }
      }
      return answered ?? startFromProof(reply, body)
    })

    const restoreOf = async (request: FastifyRequest) => {
      const t = await opts.engine.get((request.params as { id: string }).id)
      return t && isRestore(t) ? t : undefined
    }
    const render = async (t: InboundTransfer, extra: RestorePageExtra = {}) => {
      if (t.stage !== 'awaitingRecovery' || t.status === 'failed') return restorePage(t, view, extra)
      try {
        return restorePage(t, view, { ...extra, operation: await opts.engine.restoreOperation(t.transferId) })
      } catch (err) {
        return restorePage(t, view, { ...extra, operationError: (err as Error).message })
      }
    }

    app.get('/recover/restore/:id', async (request, reply) => {
      const t = await restoreOf(request)
      if (!t) return problem(reply, 'No such restore.', 404)
      return html(reply, await render(t))
    })

    app.get('/recover/restore/:id/live', async (request, reply) => {
      const t = await restoreOf(request)
      if (!t) return reply.code(404).send({ error: 'TransferNotFound', message: 'no such restore' })
      return reply
        .header('cache-control', 'no-store')
        .send({ stage: t.stage, status: t.status, html: liveProgress(t) })
    })

    // What the page's script signs: the operation as planned over PLC's log now.
    app.get('/recover/restore/:id/operation', async (request, reply) => {
      const t = await restoreOf(request)
      if (!t) return reply.code(404).send({ error: 'TransferNotFound', message: 'no such restore' })
      try {
        return reply
          .header('cache-control', 'no-store')
          .send(await opts.engine.restoreOperation(t.transferId))
      } catch (err) {
        if (!(err instanceof EngineError)) throw err
        return reply
          .code(err.code === 'PlcUnreachable' ? 502 : 400)
          .send({ error: err.code, message: err.message })
      }
    })

    app.post('/recover/restore/:id/complete', async (request, reply) => {
      if (!sameOrigin(request)) return problem(reply, 'This form must be sent from this site.', 403)
      const t = await restoreOf(request)
      if (!t) return problem(reply, 'No such restore.', 404)
      const body = form(request)
      const password = readPassword(body)
      if (typeof password === 'object') return html(reply, await render(t, { error: password.error }), 400)
      let signedOperation: unknown
      const signed = text(body.signedOperation)
      if (signed) {
        try {
          signedOperation = JSON.parse(signed)
        } catch {
          return html(
            reply,
            await render(t, { error: 'The signed operation was damaged on the way; sign again.' }),
            400,
          )
        }
      } else if (body.submitted !== 'yes') {
        return html(reply, await render(t, { error: 'Choose your rotation key file and sign first.' }), 400)
      }
      try {
        await opts.engine.completeRestore(t.transferId, {
          ...(signedOperation !== undefined && { signedOperation }),
          acceptMissingBlobs: body.acceptMissingBlobs === 'yes',
          ...(password && { password }),
          ...(text(body.email) && { email: text(body.email) }),
        })
        return reply.redirect(`/recover/restore/${t.transferId}`, 303)
      } catch (err) {
        const now = (await opts.engine.get(t.transferId)) ?? t
        if (err instanceof EngineError) return html(reply, await render(now, { error: err.message }), 400)
        throw err
      }
    })

    app.post('/recover/restore/:id/cancel', async (request, reply) => {
      if (!sameOrigin(request)) return problem(reply, 'This form must be sent from this site.', 403)
      const t = await restoreOf(request)
      if (!t) return problem(reply, 'No such restore.', 404)
      try {
        await opts.engine.cancel(t.transferId)
        return reply.redirect(`/recover/restore/${t.transferId}`, 303)
      } catch (err) {
        if (err instanceof EngineError) return html(reply, await render(t, { error: err.message }), 400)
        throw err
      }
    })

    if (!app.hasContentTypeParser('application/x-www-form-urlencoded')) {
      app.addContentTypeParser(
        'application/x-www-form-urlencoded',
        { parseAs: 'string' },
        (_req, body, done) => {
          done(null, Object.fromEntries(new URLSearchParams(body as string)))
        },
      )
    }

    /**
     * What the proof page needs: the identity from PLC and the copy's answer; or the start
     * form's field to blame, with what to do.
     */
    async function proofInput(
      did: string,
      source: string,
      token: string,
    ): Promise<Parameters<typeof recoverProofPage>[0] | { field: 'identifier' | 'source'; message: string }> {
      if (!did.startsWith('did:plc:'))
        return {
          field: 'identifier',
          message: `${did} is not a did:plc: only a did:plc identity is taken back with a rotation key.`,
        }
      let log: plc.ExportedOp[]
      try {
        log = await opts.plc.getAuditableLog(did)
      } catch {
        return {
          field: 'identifier',
          message: `The PLC directory has no identity ${did} (or did not answer). Check the DID and try again.`,
        }
      }
      const { keys, recent } = await describeRotationKeys(log, [])
      // Each recent change in words; keys it removed can still undo it (not strangers to the page).
      const active = log.filter((e) => !e.nullified)
      const formerKeys: { key: string; until: string }[] = []
      const changes = recent.map((change) => {
        const at = active.findIndex((e) => e.cid === change.cid)
        const before = active[at - 1]?.operation
        const after = active[at]?.operation
        if (!before || !after || before.type === 'plc_tombstone') return { ...change, what: [] }
        const was = plc.normalizeOp(before)
        for (const key of was.rotationKeys)
          if (!keys.some((k) => k.key === key) && !formerKeys.some((f) => f.key === key))
            formerKeys.push({ key, until: change.undoableUntil })
        return { ...change, what: describeChange(was, after) }
      })
      const last = log.filter((e) => !e.nullified).at(-1)?.operation
      const state = last && last.type === 'plc_operation' ? last : undefined
      const handle = state?.alsoKnownAs.find((a) => a.startsWith('at://'))?.slice('at://'.length)
      const currentPds = state?.services.atproto_pds?.endpoint
      // An uploaded copy is checked when it arrives, after the proof; an address is asked now.
      const upload = copies !== undefined && source === UPLOADED_COPY
      const copy = upload ? {} : await probeCopy(source, did, token)
      if ('message' in copy) return { field: 'source', message: copy.message }
      const unfinished = await opts.engine.unfinished(did)
      return {
        did,
        ...(handle && { handle }),
        ...(currentPds && { currentPds }),
        keys,
        formerKeys,
        recent: changes,
        source,
        token,
        ...(copy.rev && { copyRev: copy.rev }),
        challenge: restoreChallenge({ serviceDid: opts.serviceDid, did, source }),
        ...(unfinished && isRestore(unfinished) && { unfinished: unfinished.transferId }),
        ...(upload && { uploadLimit: copies.maxBytes }),
      }
    }
  },
  { name: '@pds-transfer/destination/recover', fastify: '5.x' },
)
