/**
 * Puts the user's own rotation key first in an identity's rotation keys while its PDS still
 * cooperates: the one preparation that makes recovery possible later (spec/recovery.md, "Why the
 * user's key must be first"). A PDS signs PLC operations for its accounts only with a code it
 * emails (`requestPlcOperationSignature`, then `signPlcOperation` with the code). The CLI signs
 * in with the account's password (`addRotationKey`: the reference PDS refuses app passwords
 * here), the web page /keys with an OAuth session asking for `identity:*`; both go through
 * `putRotationKeyFirst`. Invariant: the operation the PDS returns is submitted only if it
 * continues the identity's newest operation and changes nothing but the rotation keys, and those
 * are exactly the user's key followed by the current ones in their order.
 */
import * as plc from '@did-plc/lib'
import { IdentityError } from './identity-error.ts'
import { type PdsCall, pdsCall } from './pds-call.ts'

/** PLC's limit on rotation keys per identity (did:plc spec). */
export const MAX_ROTATION_KEYS = 5

export interface PdsSignIn {
  /** The account's PDS (`atproto_pds` of its DID document). */
  pds: string
  did: string
  /** The account's password (not an app password: the PDS refuses those for identity changes). */
  password: string
  fetch?: typeof fetch
}

/**
 * The rotation keys with `userKey` put first: undefined when it is first already (nothing to
 * do); `KeyLimit` when that would make more than PLC allows. Checked before anyone signs in.
 */
export function keysWithUserFirst(current: string[], userKey: string): string[] | undefined {
  if (current[0] === userKey) return undefined
  const rotationKeys = [userKey, ...current.filter((k) => k !== userKey)]
  if (rotationKeys.length > MAX_ROTATION_KEYS)
    throw new IdentityError(
      'KeyLimit',
      `this identity already has ${current.length} rotation keys, PLC's maximum is ${MAX_ROTATION_KEYS}`,
      'one must be removed first; ask your PDS which of them it does not need',
    )
  return rotationKeys
}

/** Signs in with the password and asks the PDS to email the code that authorizes a PLC operation. */
export async function requestRotationKeyCode(signIn: PdsSignIn): Promise<void> {
  await (await session(signIn))('com.atproto.identity.requestPlcOperationSignature', undefined)
}

/** `putRotationKeyFirst` signed in with the account's password (the CLI's `add-key --code`). */
export async function addRotationKey(
  signIn: PdsSignIn & { userKey: string; code: string; plc: plc.Client },
): Promise<{ rotationKeys: string[]; changed: boolean }> {
  return putRotationKeyFirst({ ...signIn, connect: () => session(signIn) })
}

/**
 * With the emailed `code`, has the PDS sign an operation that puts `userKey` first, checks it and
 * submits it through the PDS (which also sends it to PLC). Returns the rotation keys PLC now
 * lists, or the current ones unchanged when the key is already first (then the PDS is not asked).
 */
export async function putRotationKeyFirst(params: {
  did: string
  userKey: string
  code: string
  plc: Pick<plc.Client, 'getAuditableLog' | 'getDocumentData'>
  /** Calls at the account's PDS as the account; connected only once there is something to sign. */
  connect: () => Promise<PdsCall>
}): Promise<{ rotationKeys: string[]; changed: boolean }> {
  const head = (await params.plc.getAuditableLog(params.did)).filter((e) => !e.nullified).at(-1)
  if (!head || head.operation.type === 'plc_tombstone')
    throw new IdentityError('Tombstoned', `${params.did} has no live identity at PLC`, 'nothing can be added')
  const current = plc.normalizeOp(head.operation)
  const rotationKeys = keysWithUserFirst(current.rotationKeys, params.userKey)
  if (!rotationKeys) return { rotationKeys: current.rotationKeys, changed: false }
  const call = await params.connect()
  const signed = (await call('com.atproto.identity.signPlcOperation', {
    token: params.code,
    rotationKeys,
  })) as { operation?: unknown }
  const parsed = plc.def.operation.safeParse(signed.operation)
  if (!parsed.success)
    throw new IdentityError(
      'PdsRefused',
      'your PDS answered signPlcOperation without a PLC operation; nothing was submitted',
      'nothing changed; try again later, or ask your PDS operator',
    )
  const op = parsed.data
  // The PDS signs what it likes; only the change asked for, on top of the newest operation, is let
  // through (an older `prev` would fork the log and could undo recent changes).
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)
  if (
    op.prev !== head.cid ||
    !same(op.rotationKeys, rotationKeys) ||
    !same(op.verificationMethods, current.verificationMethods) ||
    !same(op.alsoKnownAs, current.alsoKnownAs) ||
    !same(op.services, current.services)
  )
    throw new IdentityError(
      'UnexpectedOperation',
      'your PDS signed an operation that changes more than the rotation keys; it was not submitted',
      'nothing changed; ask your PDS operator why, or try again',
    )
  await call('com.atproto.identity.submitPlcOperation', { operation: op })
  return { rotationKeys: (await params.plc.getDocumentData(params.did)).rotationKeys, changed: true }
}

/** A `PdsCall` signed in with the account's password. */
async function session(signIn: PdsSignIn): Promise<PdsCall> {
  const doFetch = signIn.fetch ?? fetch
  const base = signIn.pds.replace(/\/+$/, '')
  const next =
    'check the password (your account password: app passwords cannot change an identity) and the code, which expires after a few minutes; run without --code for a new one'
  let token: string | undefined
  const call = pdsCall(
    (path, init) =>
      doFetch(`${base}${path}`, {
        ...init,
        headers: {
          ...(init.headers as Record<string, string>),
          ...(token && { authorization: `Bearer ${token}` }),
        },
      }),
    next,
  )
  const { accessJwt } = (await call('com.atproto.server.createSession', {
    identifier: signIn.did,
    password: signIn.password,
  })) as { accessJwt?: string }
  if (!accessJwt)
    throw new IdentityError('PdsRefused', 'your PDS refused: createSession answered without a session', next)
  token = accessJwt
  return call
}
