import * as plc from '@did-plc/lib'
import { KEYS_OAUTH_SCOPE } from '@pds-transfer/core'
import {
  describeChange,
  describeRotationKeys,
  IdentityError,
  keysWithUserFirst,
  MAX_ROTATION_KEYS,
  pdsCall,
  putRotationKeyFirst,
} from '@pds-transfer/identity'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { accountDid } from './account-did.ts'
import { type KeysFlow, KeysFlows } from './keys-flows.ts'
import {
  type KeysListInput,
  keysCodePage,
  keysDonePage,
  keysListPage,
  keysProblemPage,
  keysStartPage,
} from './keys-pages.ts'
import { accountOf, looksPrivate, normalizeCode } from './migrate-form.ts'
import { assertRotationKey, RotationKeyError } from './rotation-keys.ts'
import type { SourceAuthorizer } from './source-authorizer.ts'
import type { SourceClient } from './source-client.ts'

/** The OAuth side /keys needs: the shared authorization, and the session it left (with its scope). */
export interface KeysAuthorizer extends SourceAuthorizer {
  session(did: string): Promise<{ client: SourceClient; scope: string } | undefined>
  signOut(did: string): Promise<void>
}

export interface KeysPluginOptions {
  /** The PLC directory: the audit log shows the keys; it is what the PDS submits to. */
  plc: plc.Client
  authorizer: KeysAuthorizer
  /** Our public URL: form posts must come from it. */
  publicUrl: string
  /** This server's URL as PLC names it for its accounts (default `publicUrl`): a change pointing there is a move here. */
  pdsUrl?: string
  /** Resolves a handle to a DID (default: `https://<handle>/.well-known/atproto-did`). */
  resolveHandle?: (handle: string) => Promise<string | undefined>
  /**
   * Whether a move of the account to this server is under way (`TransferEngine.unfinished`):
   * OAuth sessions are kept by DID, so signing in for /keys would replace the move's.
   */
  moveUnderWay?: (did: string) => Promise<boolean>
}

/** What to try when the PDS refuses, in words for the web page (the CLI says its own). */
const NEXT = 'try again in a few minutes; if it keeps refusing, use pds-identity add-key with your password'

/**
 * The `/keys` web UI on the destination PDS, for an account on any PDS: the identity's rotation
 * keys by rank from PLC's audit log, its changes of the last 72 hours, which key is the person's
 * (their key file read in the page, or the public key pasted), and "Add a key of your own": a
 * P-256 key pair made in the browser (rotation-keygen.ts; the private key never leaves the page),
 * an OAuth sign-in at the account's PDS asking only `atproto identity:*` (through /migrate's
 * shared callback, which sends the browser back here), the emailed code, and the operation the
 * PDS signs checked to change nothing but putting the key first before it is submitted
 * (`putRotationKeyFirst`, shared with `pds-identity add-key`).
 */
export const keysPlugin = fp(
  async (app: FastifyInstance, opts: KeysPluginOptions) => {
    const origin = new URL(opts.publicUrl).origin
    const ourPds = opts.pdsUrl ?? opts.publicUrl
    const flows = new KeysFlows()
    const html = (reply: FastifyReply, body: string, status = 200) =>
      reply.code(status).type('text/html; charset=utf-8').header('cache-control', 'no-store').send(body)
    const sameOrigin = (request: FastifyRequest) => request.headers.origin === origin
    const startAgain = { href: '/keys', label: 'Start again' }
    const problem = (reply: FastifyReply, message: string, status = 400, next = [startAgain]) =>
      html(reply, keysProblemPage(message, next), status)

    app.get('/keys', async (_request, reply) => html(reply, keysStartPage()))

    app.get('/keys/list', async (request, reply) => {
      const query = request.query as { identifier?: unknown; key?: unknown }
      const identifier = String(query.identifier ?? '').trim()
      const key = String(query.key ?? '').trim()
      const did = await accountDid(accountOf(identifier), opts.resolveHandle)
      if (!did)
        return html(
          reply,
          keysStartPage(
            identifier,
            `Could not find an account for "${identifier}". Check the spelling, or paste your DID.`,
          ),
          400,
        )
      let error: { field: 'key'; message: string } | undefined
      if (key && looksPrivate(key)) error = { field: 'key', message: PRIVATE_KEY }
      const listed = await identityView(did, error ? [] : [key])
      if ('message' in listed) return html(reply, keysStartPage(identifier, listed.message), 400)
      return html(
        reply,
        keysListPage({ ...listed, ...(key && !error && { checkedKey: key }), ...(error && { error }) }),
        error ? 400 : 200,
      )
    })

    app.post('/keys/authorize', async (request, reply) => {
      if (!sameOrigin(request)) return problem(reply, 'This form must be sent from this site.', 403)
      const body = (request.body ?? {}) as { did?: unknown; rotationKey?: unknown }
      const did = String(body.did ?? '')
      const rotationKey = String(body.rotationKey ?? '').trim()
      const listed = await identityView(did, [])
      if ('message' in listed) return problem(reply, listed.message)
      const refuse = (message: string) =>
        html(reply, keysListPage({ ...listed, rotationKey, error: { field: 'rotationKey', message } }), 400)
      if (looksPrivate(rotationKey))
        return html(
          reply,
          keysListPage({ ...listed, error: { field: 'rotationKey', message: PRIVATE_KEY } }),
          400,
        )
      try {
        assertRotationKey(rotationKey)
      } catch (err) {
        if (!(err instanceof RotationKeyError)) throw err
        return refuse(
          `${err.message}. Make a key pair above (or with pds-identity keygen) and use its public key.`,
        )
      }
      try {
        if (
          !keysWithUserFirst(
            listed.keys.map((k) => k.key),
            rotationKey,
          )
        )
          return refuse('This key is already first: there is nothing to add. Keep its file safe.')
      } catch (err) {
        if (err instanceof IdentityError) return refuse(`${err.message}: ${err.next}.`)
        throw err
      }
      if (!listed.pds)
        return problem(
          reply,
          'Your identity names no server to sign in at, so no key can be added through it.',
        )
      if (await opts.moveUnderWay?.(did))
        return problem(
          reply,
          'A move of this account to this server is under way. Finish it first: its last step can add your key too.',
          409,
          [{ href: '/migrate', label: 'Continue the move' }],
        )
      const flow = flows.open({ did, pds: listed.pds, userKey: rotationKey })
      try {
        const url = await opts.authorizer.authorize({
          did,
          sourceUrl: listed.pds,
          scope: KEYS_OAUTH_SCOPE,
          returnTo: `/keys/add/${flow.id}`,
        })
        return reply.redirect(url.toString(), 303)
      } catch (err) {
        return problem(
          reply,
          `Could not start the sign-in at your server: ${(err as Error).message}. Try again in a few minutes.`,
          502,
        )
      }
    })

    /** The flow's page: after the sign-in, the code is asked for once; at the end, the keys. */
    app.get('/keys/add/:id', async (request, reply) => {
      const flow = flowOf(request)
      if (!flow) return problem(reply, EXPIRED, 404)
      if (flow.result) return html(reply, donePage(flow, flow.result))
      const signin = (request.query as { signin?: unknown }).signin
      const again = [
        {
          href: `/keys/list?identifier=${encodeURIComponent(flow.did)}`,
          label: 'Back to your keys, to sign in again',
        },
      ]
      if (signin === 'declined')
        return problem(
          reply,
          'You declined at your server, so nothing changed. You can sign in again and allow it.',
          400,
          again,
        )
      const session = await opts.authorizer.session(flow.did)
      if (signin === 'failed' || !session)
        return problem(
          reply,
          'The sign-in at your server did not complete, so nothing changed. Sign in again.',
          400,
          again,
        )
      if (!session.scope.split(' ').includes('identity:*'))
        return problem(
          reply,
          `Your server did not allow this server to manage your identity (it granted "${session.scope}", not identity:*), so no code can be asked for and nothing changed. Sign in again and allow it; if your server never offers it, use pds-identity add-key with your password.`,
          403,
          again,
        )
      if (flow.codeRequestedAt === undefined) {
        const refused = await askForCode(flow, session.client)
        if (refused) return problem(reply, refused, 502, again)
      }
      return html(reply, keysCodePage({ flowId: flow.id, ...flow }))
    })

    app.post('/keys/add/:id/resend', async (request, reply) => {
      if (!sameOrigin(request)) return problem(reply, 'This form must be sent from this site.', 403)
      const flow = flowOf(request)
      if (!flow) return problem(reply, EXPIRED, 404)
      const session = await opts.authorizer.session(flow.did)
      if (!session) return problem(reply, 'Your sign-in at your server has ended. Start again.', 401)
      const refused = await askForCode(flow, session.client)
      if (refused) return html(reply, keysCodePage({ flowId: flow.id, ...flow, error: refused }), 502)
      return html(
        reply,
        keysCodePage({
          flowId: flow.id,
          ...flow,
          notice: 'A new code is on its way. Codes from earlier emails no longer work.',
        }),
      )
    })

    app.post('/keys/add/:id/complete', async (request, reply) => {
      if (!sameOrigin(request)) return problem(reply, 'This form must be sent from this site.', 403)
      const flow = flowOf(request)
      if (!flow) return problem(reply, EXPIRED, 404)
      if (flow.result) return reply.redirect(`/keys/add/${flow.id}`, 303)
      const code = normalizeCode(String((request.body as { token?: unknown } | undefined)?.token ?? ''))
      const session = await opts.authorizer.session(flow.did)
      if (!session)
        return problem(reply, 'Your sign-in at your server has ended, so nothing changed. Start again.', 401)
      try {
        flow.result = await putRotationKeyFirst({
          did: flow.did,
          userKey: flow.userKey,
          code,
          plc: opts.plc,
          connect: async () => pdsCall(session.client.fetch, NEXT),
        })
      } catch (err) {
        if (!(err instanceof IdentityError)) throw err
        if (err.reason === 'InvalidCode' || err.reason === 'PdsRefused')
          return html(
            reply,
            keysCodePage({
              flowId: flow.id,
              ...flow,
              typed: code,
              error:
                err.reason === 'InvalidCode'
                  ? `That code was not accepted ${err.message.replace(/^your PDS did not accept the code /, '')}. Ask for a new code below and type the one in the newest email.`
                  : `${err.message}. Nothing changed; ${err.next}.`,
            }),
            400,
          )
        // A PDS that signed more than asked, or a change at PLC since: nothing was submitted.
        return problem(reply, `${err.message}. ${capital(err.next)}.`, 409, [
          {
            href: `/keys/list?identifier=${encodeURIComponent(flow.did)}`,
            label: 'See your keys as they are now',
          },
        ])
      }
      // The session could change this identity again: it is not kept once the key is first.
      await opts.authorizer.signOut(flow.did)
      return reply.redirect(`/keys/add/${flow.id}`, 303)
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

    function flowOf(request: FastifyRequest): KeysFlow | undefined {
      return flows.get((request.params as { id: string }).id)
    }

    /** Asks the PDS to email the code; what went wrong, in words, or nothing. */
    async function askForCode(flow: KeysFlow, client: SourceClient): Promise<string | undefined> {
      try {
        await pdsCall(client.fetch, NEXT)('com.atproto.identity.requestPlcOperationSignature', undefined)
        flow.codeRequestedAt = Date.now()
        return undefined
      } catch (err) {
        if (!(err instanceof IdentityError)) throw err
        return `${err.message}. Nothing changed; ${err.next}.`
      }
    }

    function donePage(flow: KeysFlow, result: NonNullable<KeysFlow['result']>) {
      return keysDonePage({
        did: flow.did,
        changed: result.changed,
        keys: result.rotationKeys.map((key, i) => ({ rank: i + 1, key, yours: key === flow.userKey })),
      })
    }

    /** The identity's keys and recent changes from PLC, or why they cannot be shown. */
    async function identityView(
      did: string,
      yourKeys: string[],
    ): Promise<Omit<KeysListInput, 'checkedKey' | 'rotationKey' | 'error'> | { message: string }> {
      if (!did.startsWith('did:plc:'))
        return { message: `${did} is not a did:plc: only did:plc identities have rotation keys.` }
      let log: plc.ExportedOp[]
      try {
        log = await opts.plc.getAuditableLog(did)
      } catch {
        return {
          message: `The PLC directory has no identity ${did} (or did not answer). Check the DID and try again.`,
        }
      }
      const { keys, recent } = await describeRotationKeys(log, yourKeys)
      const active = log.filter((e) => !e.nullified)
      const changes = recent.map((change) => {
        const i = active.findIndex((e) => e.cid === change.cid)
        const before = active[i - 1]?.operation
        const after = active[i]?.operation
        const what =
          before && after && before.type !== 'plc_tombstone'
            ? describeChange(plc.normalizeOp(before), after)
            : []
        const movedHere =
          after?.type === 'plc_operation' &&
          namesServer(after.services.atproto_pds?.endpoint, ourPds) &&
          before?.type === 'plc_operation' &&
          !namesServer(before.services.atproto_pds?.endpoint, ourPds)
        return { ...change, what, ...(movedHere && { movedHere }) }
      })
      const last = active.at(-1)?.operation
      const state = last && last.type !== 'plc_tombstone' ? plc.normalizeOp(last) : undefined
      const handle = state?.alsoKnownAs.find((a) => a.startsWith('at://'))?.slice('at://'.length)
      const pds = state?.services.atproto_pds?.endpoint
      return {
        did,
        ...(handle && { handle }),
        ...(pds && { pds }),
        keys,
        recent: changes,
        maxKeys: MAX_ROTATION_KEYS,
      }
    }
  },
  { name: '@pds-transfer/destination/keys', fastify: '5.x' },
)

const PRIVATE_KEY =
  'This looks like a private key. Never paste a private key into a web page: paste the public key, which starts with did:key:z. If this private key was ever shared, make a new key pair.'
const EXPIRED =
  'This page has expired (an hour after it began), or this server restarted. Nothing changed; start again.'

function namesServer(url: string | undefined, other: string): boolean {
  try {
    return url !== undefined && new URL(url).origin === new URL(other).origin
  } catch {
    return false
  }
}

function capital(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1)
}
