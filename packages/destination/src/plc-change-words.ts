import * as plc from '@did-plc/lib'

/** What a PLC operation changed, in words (/recover and /keys show a person their identity's recent changes). */
export function describeChange(
  was: plc.Operation | plc.UnsignedOperation,
  next: plc.CompatibleOpOrTombstone,
): string[] {
  if (next.type === 'plc_tombstone') return ['deleted the identity']
  const now = plc.normalizeOp(next)
  const what: string[] = []
  const pds = now.services.atproto_pds?.endpoint
  if (pds !== was.services.atproto_pds?.endpoint) what.push(`pointed it at ${pds ?? 'no server'}`)
  if (now.verificationMethods.atproto !== was.verificationMethods.atproto)
    what.push('replaced the key your posts are signed with')
  for (const key of was.rotationKeys)
    if (!now.rotationKeys.includes(key)) what.push(`removed rotation key ${key}`)
  for (const key of now.rotationKeys)
    if (!was.rotationKeys.includes(key)) what.push(`added rotation key ${key}`)
  if (now.alsoKnownAs.join() !== was.alsoKnownAs.join())
    what.push(`set the handle to ${now.alsoKnownAs.join(', ') || 'none'}`)
  return what.length > 0 ? what : ['changed the order of the rotation keys, or nothing visible']
}
