/**
 * Puts the user's own rotation key first in an identity's rotation keys while its PDS still
 * cooperates: the one preparation that makes recovery possible later (spec/recovery.md, "Why the
 * user's key must be first"). A PDS signs PLC operations for its accounts only with a code it
 * emails (`requestPlcOperationSignature`, then `signPlcOperation` with the code), under the
 * account's full sign-in: the reference PDS refuses app passwords here. Invariant: the operation
 * the PDS returns is submitted only if it changes nothing but the rotation keys, and those are
 * exactly the user's key followed by the current ones in their order.
 */
import * as plc from '@did-plc/lib'
import { IdentityError } from './identity-error.ts'

/** PLC's limit on rotation keys per identity (did:plc spec). */
const MAX_ROTATION_KEYS = 5

export interface PdsSignIn {
  /** The account's PDS (`atproto_pds` of its DID document). */
  pds: string
  did: string
  /** The account's password (not an app password: the PDS refuses those for identity changes). */
  password: string
  fetch?: typeof fetch
}

/** Signs in and asks the PDS to email the code that authorizes a PLC operation. */
export async function requestRotationKeyCode(signIn: PdsSignIn): Promise<void> {
  const xrpc = await session(signIn)
  await xrpc('com.atproto.identity.requestPlcOperationSignature', undefined)
}

/**
 * With the emailed `code`, has the PDS sign an operation that puts `userKey` first, checks it and
 * submits it through the PDS (which also sends it to PLC). Returns the rotation keys PLC now
 * lists, or the current ones unchanged when the key is already first.
 */
export async function addRotationKey(
  signIn: PdsSignIn & { userKey: string; code: string; plc: plc.Client },
): Promise<{ rotationKeys: string[]; changed: boolean }> {
  const current = await signIn.plc.getDocumentData(signIn.did)
  if (current.rotationKeys[0] === signIn.userKey)
    return { rotationKeys: current.rotationKeys, changed: false }
  const rotationKeys = [signIn.userKey, ...current.rotationKeys.filter((k) => k !== signIn.userKey)]
  if (rotationKeys.length > MAX_ROTATION_KEYS)
    throw new IdentityError(
      'KeyLimit',
      `this identity already has ${current.rotationKeys.length} rotation keys, PLC's maximum is ${MAX_ROTATION_KEYS}`,
      'one must be removed first; ask your PDS which of them it does not need',
    )
  const xrpc = await session(signIn)
  const signed = (await xrpc('com.atproto.identity.signPlcOperation', {
    token: signIn.code,
    rotationKeys,
  })) as { operation?: unknown }
  const parsed = plc.def.operation.safeParse(signed.operation)
  if (!parsed.success) throw refused('signPlcOperation answered without a PLC operation')
  const op = parsed.data
  // The PDS signs what it likes; only the change asked for is let through.
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)
  if (
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
  await xrpc('com.atproto.identity.submitPlcOperation', { operation: op })
  return { rotationKeys: (await signIn.plc.getDocumentData(signIn.did)).rotationKeys, changed: true }
}

/** An XRPC caller signed in to the account's PDS; a refusal becomes `PdsRefused` with the PDS's words. */
async function session(signIn: PdsSignIn): Promise<(nsid: string, body: unknown) => Promise<unknown>> {
  const doFetch = signIn.fetch ?? fetch
  const base = signIn.pds.replace(/\/+$/, '')
  const call = async (nsid: string, body: unknown, token?: string) => {
    const res = await doFetch(`${base}/xrpc/${nsid}`, {
      method: 'POST',
      headers: {
        ...(body !== undefined && { 'content-type': 'application/json' }),
        ...(token && { authorization: `Bearer ${token}` }),
      },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    }).catch((err: unknown) => {
      throw refused(`${base} did not answer ${nsid} (${(err as Error).message})`)
    })
    const answer = (await res.json().catch(() => ({}))) as { error?: string; message?: string }
    if (!res.ok)
      throw refused(`${nsid}: ${answer.error ?? res.status}${answer.message ? `: ${answer.message}` : ''}`)
    return answer
  }
  const { accessJwt } = (await call('com.atproto.server.createSession', {
    identifier: signIn.did,
    password: signIn.password,
  })) as { accessJwt?: string }
  if (!accessJwt) throw refused('createSession answered without a session')
  return (nsid, body) => call(nsid, body, accessJwt)
}

function refused(message: string): IdentityError {
  return new IdentityError(
    'PdsRefused',
    `your PDS refused: ${message}`,
    'check the password (your account password: app passwords cannot change an identity) and the code, which expires after a few minutes; run without --code for a new one',
  )
}
