import { parseWellKnown, selectAlgorithm, WELL_KNOWN_PATH } from '@pds-transfer/core'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { accountDid } from './account-did.ts'
import type { DidResolver } from './did-resolver.ts'
import { esc, page } from './html-page.ts'
import type { InboundTransfer } from './inbound-transfer.ts'
import type { KeyRing } from './key-ring.ts'
import { accountZip } from './migrate-backup-download.ts'
import { checklistPage } from './migrate-checklist-page.ts'
import { Estimates } from './migrate-estimates.ts'
import { accountOf, looksPrivate, normalizeCode, readPassword } from './migrate-form.ts'
import { copying, liveProgress } from './migrate-html.ts'
import { PaceWindow } from './migrate-pace-window.ts'
import { estimateAccountSize } from './migrate-size-estimate.ts'
import { type PageExtra, transferPage } from './migrate-transfer-page.ts'
import { copyUrl, probeCopy, restoreSourceClient } from './restore-source-client.ts'
import { AuthorizationNotCompleted, type SourceAuthorizer } from './source-authorizer.ts'
import { type SourceClient, SourceError } from './source-client.ts'
import { sourceDialect } from './source-dialect.ts'
import { EngineError, type TransferEngine } from './transfer-engine.ts'

export interface MigratePluginOptions {
  engine: TransferEngine
  keys: KeyRing
  resolver: DidResolver
  authorizer: SourceAuthorizer
  /** Our public URL and service DID, shown to the user and used to check form posts' origin. */
  publicUrl: string
  serviceDid: string
  /** Resolves a handle to a DID (default: `https://<handle>/.well-known/atproto-did`). */
  resolveHandle?: (handle: string) => Promise<string | undefined>
  /**
   * Where this server serves `/keys` (`keysPlugin`), if it does: the start page and the result
   * of a move that left the account without a rotation key of its own point there.
   */
  keysPath?: string
  /**
   * This PDS's own URL as DID documents name it, when the pages are served at another address
   * (`publicUrl`, e.g. a TLS proxy's): an account whose PDS it is already lives here.
   */
  pdsUrl?: string
}

/**
 * The `/migrate` web UI on the destination PDS: enter a handle or DID, read the pre-migration
 * checklist of 0014, authorize at the source, follow the transfer live, enter the PLC token,
 * see the result. Server-rendered, no external resources, usable without scripts (pages
 * refresh themselves; a small inline script updates progress in place when allowed).
 */
export const migratePlugin = fp(
  async (app: FastifyInstance, opts: MigratePluginOptions) => {
    const origin = new URL(opts.publicUrl).origin
    const html = (reply: FastifyReply, body: string, status = 200) =>
      reply.code(status).type('text/html; charset=utf-8').header('cache-control', 'no-store').send(body)
    const problem = (reply: FastifyReply, message: string, status = 400) =>
      html(
        reply,
        page(
          'Something went wrong',
          // Absolute: an OAuth callback may have landed on another name of this server (127.0.0.1).
          `<p class="error" role="alert">${esc(message)}</p><p><a href="${esc(origin)}/migrate">Start again</a></p>`,
        ),
        status,
      )
    // Form posts must come from our own pages (browsers send Origin on POST).
    const sameOrigin = (request: FastifyRequest) => request.headers.origin === origin
    const estimates = new Estimates()
    const paces = new PaceWindow()
    const view = {
      origin,
      host: new URL(opts.publicUrl).host,
      canSetPassword: opts.engine.canSetPassword,
      ...(opts.keysPath && { keysPath: opts.keysPath }),
    }
    const render = async (t: InboundTransfer, extra: PageExtra = {}) => {
      // At the code step: whether the account already holds a rotation key of its own.
      const holdsOwnKey =
        t.stage === 'awaitingPlcToken'
          ? await opts.resolver.resolve(t.did).then(
              (identity) => identity.rotationKeys.length > 1,
              () => true,
            )
          : true
      const missingUses =
        t.stage === 'awaitingPlcToken' && t.missingBlobs.length > 0
          ? await opts.engine.missingBlobUses(t.transferId).catch(() => [])
          : []
      const estimate = estimates.of(t)
      const since = paces.since(t, Date.now(), copying(t))
      return transferPage(t, view, {
        holdsOwnKey,
        missingUses,
        ...(estimate && { estimate }),
        ...(since && { since }),
        ...extra,
      })
    }

    /** The start page; after an error, with what was typed and the error at the field. */
    const startPage = (typed = '', error?: string) =>
      page(
        'Move your account here',
        `<p>This server (<strong>${esc(new URL(origin).host)}</strong>) can copy your whole atproto account from
the server it is on now: posts, follows, images and settings, each checked against your signature as it arrives, and
whatever private data that server can hand over (the next page says what, for your server). Then your identity is
moved, and your handle and followers come with it.</p>
<form method="get" action="/migrate/check">
<label for="identifier">Your handle or DID</label>
${error ? `<p class="error" role="alert" id="identifier-error">${esc(error)}</p>` : ''}<input type="text" id="identifier" name="identifier" required autocomplete="username" placeholder="alice.example.com" value="${esc(typed)}"${error ? ' aria-invalid="true" aria-describedby="identifier-error" autofocus' : ''}>
<button type="submit">Continue</button>
</form>${
          // Only where the operator also serves /recover (recover-plugin.ts).
          app.hasRoute({ method: 'GET', url: '/recover' })
            ? `\n<p>Your current server is gone, or changed your account without you?
<a href="/recover">Take your account back</a> with your rotation key and a copy of your data.</p>`
            : ''
        }${
          opts.keysPath
            ? `\n<p>Not moving? <a href="${esc(opts.keysPath)}">See who can change your identity, and add a rotation key of your own</a>.</p>`
            : ''
        }`,
      )
    app.get('/migrate', async (_request, reply) => html(reply, startPage()))

    app.get('/migrate/check', async (request, reply) => {
      const identifier = String((request.query as { identifier?: unknown }).identifier ?? '').trim()
      const wanted = accountOf(identifier)
      let did: string | undefined
      try {
        did = wanted.startsWith('did:') ? wanted : await resolveHandle(wanted)
      } catch {
        did = undefined
      }
      if (!did) {
        return html(
          reply,
          startPage(
            identifier,
            `Could not find an account for "${identifier}". Check the spelling, or paste your DID.`,
          ),
          400,
        )
      }
      let identity: Awaited<ReturnType<DidResolver['resolve']>>
      try {
        identity = await opts.resolver.resolve(did)
      } catch (err) {
        return problem(reply, `Could not read the identity of ${did}: ${(err as Error).message}`)
      }
      const source = identity.pds.replace(/\/+$/, '')
      const here = [origin, opts.pdsUrl].filter((u): u is string => u !== undefined)
      if (here.some((u) => new URL(u).origin.toLowerCase() === source.toLowerCase())) {
        return html(
          reply,
          page(
            'Already here',
            `<p class="ok" role="status">${esc(identity.handle ?? did)} already lives on this server: there is nothing to move.</p>
<p>Sign in to your apps with this server as your hosting provider (<strong>${esc(new URL(origin).host)}</strong>).</p>${
              opts.keysPath
                ? `\n<p><a href="${esc(opts.keysPath)}/list?identifier=${encodeURIComponent(did)}">See who can change your identity</a>, and add a rotation key of your own.</p>`
                : ''
            }
<p><a href="${esc(origin)}/migrate">Move another account</a></p>`,
          ),
        )
      }
      // What kind of source it is, told as the engine will tell it (source-dialect.ts); a v1
      // source's well-known is then read for its version and algorithms, and any failure there is
      // a server we cannot talk to now.
      // The size is read alongside (public endpoints, a few seconds at most); see migrate-size-estimate.ts.
      const [dialect, size] = await Promise.all([
        sourceDialect(source, did),
        estimateAccountSize(source, did).catch(() => undefined),
      ])
      if (size) estimates.remember(did, size)
      let capabilities: ReturnType<typeof parseWellKnown>['document'] | undefined
      if (dialect === 'v1') {
        try {
          const res = await fetch(`${source}${WELL_KNOWN_PATH}`, { signal: AbortSignal.timeout(10_000) })
          if (!res.ok) throw new Error(`HTTP ${res.status}`)
          capabilities = parseWellKnown(await res.json()).document
        } catch (err) {
          return problem(
            reply,
            `Your current server (${source}) did not answer as expected (${(err as Error).message}). Try again in a few minutes; nothing has changed.`,
          )
        }
      }
      return html(
        reply,
        checklistPage({
          did,
          identity,
          source,
          origin,
          serviceDid: opts.serviceDid,
          dialect,
          capabilities,
          algorithm: capabilities && selectAlgorithm(opts.keys.algorithms, capabilities.algorithms),
          size,
        }),
      )
    })

    // The checklist's backup: the account's public data from its current server, as one zip.
    app.get('/migrate/backup', async (request, reply) => {
      const did = String((request.query as { did?: unknown }).did ?? '')
      let identity: Awaited<ReturnType<DidResolver['resolve']>>
      try {
        identity = await opts.resolver.resolve(did)
      } catch (err) {
        return problem(reply, `Could not read the identity of ${did}: ${(err as Error).message}`, 404)
      }
      const zip = accountZip({
        source: identity.pds,
        did,
        ...(identity.handle && { handle: identity.handle }),
        madeBy: new URL(origin).host,
      })
      return reply
        .header('content-type', 'application/zip')
        .header('content-disposition', `attachment; filename="${zip.fileName}"`)
        .header('cache-control', 'no-store')
        .send(zip.stream)
    })

    /**
     * Backups the user asked to read from, by DID, from the checklist until the sign-in returns
     * (an hour at most). Only in memory: the copy is an accelerator, and a move that lost it
     * reads everything from the current server instead.
     */
    const copies = new Map<string, { url: string; token?: string; at: number }>()
    const takeCopy = (did: string) => {
      const copy = copies.get(did)
      copies.delete(did)
      return copy && Date.now() - copy.at < 60 * 60_000
        ? restoreSourceClient(copy.url, did, copy.token)
        : undefined
    }

    app.post('/migrate/authorize', async (request, reply) => {
      if (!sameOrigin(request)) return problem(reply, 'This form must be sent from this site.', 403)
      const body = (request.body ?? {}) as { did?: unknown; copy?: unknown; copyToken?: unknown }
      const did = String(body.did ?? '')
      const typedCopy = String(body.copy ?? '').trim()
      if (typedCopy) {
        const back = `<a href="${esc(origin)}/migrate/check?identifier=${encodeURIComponent(did)}">Back to the checklist</a>`
        const url = copyUrl(typedCopy)
        const token = String(body.copyToken ?? '').trim() || undefined
        const found = url
          ? await probeCopy(url, did, token ?? '')
          : { message: 'That is not a web address: give the address of your backup, starting with https://.' }
        if ('message' in found)
          return html(
            reply,
            page(
              'Your backup could not be used',
              `<p class="error" role="alert">${esc(found.message)}</p>
<p>${back}, and correct the address or leave it empty: your current server can give everything itself.</p>`,
            ),
            400,
          )
        copies.set(did, { url: url as string, ...(token && { token }), at: Date.now() })
      } else copies.delete(did)
      try {
        const identity = await opts.resolver.resolve(did)
        const url = await opts.authorizer.authorize({ did, sourceUrl: identity.pds })
        return reply.redirect(url.toString(), 303)
      } catch (err) {
        return problem(reply, `Could not start the sign-in: ${(err as Error).message}`)
      }
    })

    // A choice the person made at their server, not a fault: no error styling, and the way back.
    app.get('/migrate/declined', async (_request, reply) =>
      html(
        reply,
        page(
          'Nothing was moved',
          `<p role="status">You declined the authorization at your current server, so nothing was copied and nothing changed.</p>
<p>Changed your mind? <a href="/migrate">Start again</a>: your current server will ask you again.</p>`,
        ),
      ),
    )

    app.get('/migrate/callback', async (request, reply) => {
      const query = new URLSearchParams(request.query as Record<string, string>)
      // Another flow of ours (/keys) signed in through this shared callback: back to it, also when
      // the sign-in did not complete, where that flow says what happened and what to do.
      const back = (returnTo: string, outcome?: string) =>
        reply.redirect(`${origin}${returnTo}${outcome ? `?signin=${outcome}` : ''}`, 303)
      if (query.get('error') === 'access_denied') {
        // The user declined at the source: say so plainly, and let the library drop its pending state.
        const other = await opts.authorizer.callback(query).then(
          () => undefined,
          (err: unknown) => (err instanceof AuthorizationNotCompleted ? err.returnTo : undefined),
        )
        if (other) return back(other, 'declined')
        // On our public origin (a loopback callback arrives on 127.0.0.1).
        return reply.redirect(`${origin}/migrate/declined`, 303)
      }
      try {
        const { did, client, returnTo } = await opts.authorizer.callback(query)
        if (returnTo) return back(returnTo)
        // One move per account: signing in again leads back to the move under way, or continues
        // the newest one if it stopped on a connection or disk failure, with what was verified.
        const existing = await opts.engine.unfinished(did)
        if (existing) opts.engine.attach(existing.transferId, client)
        const stopped = existing ? undefined : await opts.engine.resumable(did)
        const transfer =
          existing ??
          (stopped && (await opts.engine.resume(stopped.transferId, client))) ??
          (await opts.engine.start({ did, client, ...withCopy(takeCopy(did)) }))
        // Absolute: a loopback client's callback arrives on 127.0.0.1, the UI lives on our public origin.
        return reply.redirect(`${origin}/migrate/transfer/${transfer.transferId}`, 303)
      } catch (err) {
        if (err instanceof AuthorizationNotCompleted) return back(err.returnTo, 'failed')
        return problem(reply, `The transfer could not start: ${(err as Error).message}`)
      }
    })

    app.get('/migrate/transfer/:id', async (request, reply) => {
      const t = await opts.engine.get((request.params as { id: string }).id)
      if (!t) return problem(reply, 'No such transfer.', 404)
      return html(reply, await render(t), 200)
    })

    app.get('/migrate/transfer/:id/live', async (request, reply) => {
      const t = await opts.engine.get((request.params as { id: string }).id)
      if (!t) return reply.code(404).send({ error: 'TransferNotFound' })
      const now = Date.now()
      return reply.header('cache-control', 'no-store').send({
        stage: t.stage,
        status: t.status,
        html: liveProgress(t, now, estimates.of(t), paces.since(t, now, copying(t))),
      })
    })

    app.post('/migrate/transfer/:id/complete', async (request, reply) => {
      if (!sameOrigin(request)) return problem(reply, 'This form must be sent from this site.', 403)
      const id = (request.params as { id: string }).id
      const form = (request.body ?? {}) as {
        token?: unknown
        acceptMissingBlobs?: unknown
        rotationKey?: unknown
        password?: unknown
        password2?: unknown
      }
      const token = normalizeCode(String(form.token ?? ''))
      const rotationKey = String(form.rotationKey ?? '').trim()
      // Kept on every error: a person corrects one field, not the whole form.
      const typed = { token, rotationKey }
      if (rotationKey && looksPrivate(rotationKey)) {
        const t = await opts.engine.get(id)
        if (!t) return problem(reply, 'No such transfer.', 404)
        const error =
          'This looks like a private key. Never paste a private key into a web page: paste the public key, which starts with did:key:z. If this private key was ever shared, make a new key pair.'
        return html(
          reply,
          await render(t, { error, invalid: 'rotationKey', typed: { token, rotationKey: '' } }),
          400,
        )
      }
      const password = readPassword(form as { password?: unknown; password2?: unknown })
      if (typeof password === 'object') {
        const t = await opts.engine.get(id)
        if (!t) return problem(reply, 'No such transfer.', 404)
        return html(reply, await render(t, { error: password.error, invalid: 'password', typed }), 400)
      }
      try {
        await opts.engine.complete(id, {
          plcToken: token,
          acceptMissingBlobs: form.acceptMissingBlobs === 'yes',
          ...(rotationKey && { userRotationKey: rotationKey }),
          ...(password && { password }),
        })
        return reply.redirect(`/migrate/transfer/${id}`, 303)
      } catch (err) {
        const t = await opts.engine.get(id)
        if (!t) return problem(reply, 'No such transfer.', 404)
        const message =
          err instanceof SourceError && err.error === 'InvalidPlcToken'
            ? 'That code was not accepted (wrong or expired). Check the latest email from your current server.'
            : err instanceof SourceError || err instanceof EngineError
              ? err.message
              : 'The move could not be completed.'
        const invalid =
          err instanceof SourceError && err.error === 'InvalidPlcToken'
            ? 'token'
            : err instanceof EngineError && err.code === 'InvalidRotationKey'
              ? 'rotationKey'
              : err instanceof EngineError && err.code === 'InvalidPassword'
                ? 'password'
                : undefined
        return html(reply, await render(t, { error: message, typed, ...(invalid && { invalid }) }), 400)
      }
    })

    app.post('/migrate/transfer/:id/retry-missing', async (request, reply) => {
      if (!sameOrigin(request)) return problem(reply, 'This form must be sent from this site.', 403)
      const id = (request.params as { id: string }).id
      const before = await opts.engine.get(id)
      if (!before) return problem(reply, 'No such transfer.', 404)
      try {
        const t = await opts.engine.retryMissingBlobs(id)
        const found = before.missingBlobs.length - t.missingBlobs.length
        const notice =
          t.missingBlobs.length === 0
            ? 'Every image and file is here now.'
            : `${found} of ${before.missingBlobs.length} found this time; your current server still lacks the others.`
        return html(reply, await render(t, { notice }))
      } catch (err) {
        return html(reply, await render(before, { error: (err as Error).message }), 400)
      }
    })

    app.post('/migrate/transfer/:id/cancel', async (request, reply) => {
      if (!sameOrigin(request)) return problem(reply, 'This form must be sent from this site.', 403)
      const id = (request.params as { id: string }).id
      try {
        await opts.engine.cancel(id)
        return reply.redirect(`/migrate/transfer/${id}`, 303)
      } catch (err) {
        const t = await opts.engine.get(id)
        if (!t) return problem(reply, 'No such transfer.', 404)
        return html(reply, await render(t, { error: (err as Error).message }), 400)
      }
    })

    app.post('/migrate/transfer/:id/resend-token', async (request, reply) => {
      if (!sameOrigin(request)) return problem(reply, 'This form must be sent from this site.', 403)
      const id = (request.params as { id: string }).id
      let notice: string | undefined
      let error: string | undefined
      try {
        await opts.engine.requestPlcToken(id)
        notice = 'A new code is on its way to your email. Codes from earlier emails may no longer work.'
      } catch (err) {
        error =
          err instanceof SourceError && err.error === 'RateLimitExceeded'
            ? 'A code was sent less than a minute ago. Please check your email first.'
            : err instanceof SourceError || err instanceof EngineError
              ? err.message
              : 'A new code could not be requested.'
      }
      const t = await opts.engine.get(id)
      if (!t) return problem(reply, 'No such transfer.', 404)
      return html(
        reply,
        await render(t, { ...(error && { error }), ...(notice && { notice }) }),
        error ? 400 : 200,
      )
    })

    // Setting a password after the move, through this PDS's own reset-password flow (the code
    // is emailed to the address that moved; migrate-password.ts).
    const resetCall = (nsid: string, body: Record<string, string>) =>
      fetch(`${opts.publicUrl}/xrpc/${nsid}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
    const completedTransfer = async (request: FastifyRequest, reply: FastifyReply) => {
      if (!sameOrigin(request)) {
        await problem(reply, 'This form must be sent from this site.', 403)
        return undefined
      }
      const t = await opts.engine.get((request.params as { id: string }).id)
      if (t?.status !== 'completed') {
        await problem(reply, 'No moved account here.', 404)
        return undefined
      }
      return t
    }
    app.post('/migrate/transfer/:id/password-reset', async (request, reply) => {
      const t = await completedTransfer(request, reply)
      if (!t) return reply
      const email = String((request.body as { email?: unknown })?.email ?? '').trim()
      const res = await resetCall('com.atproto.server.requestPasswordReset', { email })
      // The PDS answers the same for any address (it does not tell whether one is known).
      if (!res.ok)
        return html(
          reply,
          await render(t, { error: 'This server could not send the email; try again later.' }),
          502,
        )
      return html(reply, await render(t, { resetSent: true }))
    })
    app.post('/migrate/transfer/:id/password', async (request, reply) => {
      const t = await completedTransfer(request, reply)
      if (!t) return reply
      const body = (request.body ?? {}) as { token?: unknown; password?: unknown }
      const res = await resetCall('com.atproto.server.resetPassword', {
        token: String(body.token ?? '').trim(),
        password: String(body.password ?? ''),
      })
      if (!res.ok) {
        return html(
          reply,
          await render(t, {
            error:
              'That code was not accepted (wrong or expired), or the password is too short. Ask for a new code.',
            resetSent: true,
          }),
          400,
        )
      }
      const updated = await opts.engine.notePasswordChosen(t.transferId)
      return html(reply, await render(updated, { notice: 'Your password is set. You can sign in here now.' }))
    })

    // Form bodies of the pages above.
    if (!app.hasContentTypeParser('application/x-www-form-urlencoded')) {
      app.addContentTypeParser(
        'application/x-www-form-urlencoded',
        { parseAs: 'string' },
        (_req, body, done) => {
          done(null, Object.fromEntries(new URLSearchParams(body as string)))
        },
      )
    }

    async function resolveHandle(handle: string): Promise<string | undefined> {
      const found = await accountDid(handle, opts.resolveHandle)
      // A handle of this server's own accounts (someone checking whether they already moved).
      return found ?? (await ownHandle(handle))
    }

    async function ownHandle(handle: string): Promise<string | undefined> {
      const res = await fetch(
        `${origin}/xrpc/com.atproto.identity.resolveHandle?handle=${encodeURIComponent(handle)}`,
        { signal: AbortSignal.timeout(5000) },
      ).catch(() => undefined)
      const did = res?.ok ? ((await res.json()) as { did?: unknown }).did : undefined
      return typeof did === 'string' ? did : undefined
    }
  },
  { name: '@pds-transfer/destination/migrate', fastify: '5.x' },
)

/** `{ copy }` when there is one, for `TransferEngine.start`. */
function withCopy(copy: SourceClient | undefined): { copy?: SourceClient } {
  return copy ? { copy } : {}
}
