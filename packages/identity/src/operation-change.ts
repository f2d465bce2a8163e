import {
  type CompatibleOpOrTombstone,
  normalizeOp,
  type Operation,
  type UnsignedOperation,
} from '@did-plc/lib'

/**
 * What a PLC operation changed, in words a person can act on: where it points the identity, the
 * key posts are signed with (`#atproto`), rotation keys added, removed or reordered (the order
 * is their power: spec/recovery.md), the handle, other services, deletion. `before` is the state
 * it followed; undefined for the operation that created the DID.
 */
export function describeChange(
  before: Operation | UnsignedOperation | undefined,
  next: CompatibleOpOrTombstone,
): string[] {
  if (next.type === 'plc_tombstone') return ['deleted the identity (tombstone): it can never change again']
  const now = normalizeOp(next)
  if (!before)
    return [
      `created the identity at ${now.services.atproto_pds?.endpoint ?? 'no server'} with ${now.rotationKeys.length} rotation key(s)`,
    ]
  const what: string[] = []
  const pds = now.services.atproto_pds?.endpoint
  const was = before.services.atproto_pds?.endpoint
  if (pds !== was) what.push(`pointed it at ${pds ?? 'no server'} (was ${was ?? 'no server'})`)
  if (now.verificationMethods.atproto !== before.verificationMethods.atproto)
    what.push(
      `replaced the key your posts are signed with (#atproto ${before.verificationMethods.atproto ?? 'none'} -> ${now.verificationMethods.atproto ?? 'none'})`,
    )
  for (const id of new Set([
    ...Object.keys(before.verificationMethods),
    ...Object.keys(now.verificationMethods),
  ]))
    if (id !== 'atproto' && now.verificationMethods[id] !== before.verificationMethods[id])
      what.push(`changed verification method #${id}`)
  for (const [i, key] of before.rotationKeys.entries())
    if (!now.rotationKeys.includes(key)) what.push(`removed rotation key ${key} (was ranked ${i + 1})`)
  for (const [i, key] of now.rotationKeys.entries())
    if (!before.rotationKeys.includes(key)) what.push(`added rotation key ${key} (ranked ${i + 1})`)
  const kept = now.rotationKeys.filter((k) => before.rotationKeys.includes(k))
  if (kept.join() !== before.rotationKeys.filter((k) => now.rotationKeys.includes(k)).join())
    what.push(`reordered the rotation keys: now ${now.rotationKeys.join(', ')}`)
  if (now.alsoKnownAs.join() !== before.alsoKnownAs.join())
    what.push(`set the handle to ${now.alsoKnownAs.join(', ') || 'none'}`)
  for (const id of new Set([...Object.keys(before.services), ...Object.keys(now.services)]))
    if (id !== 'atproto_pds' && JSON.stringify(now.services[id]) !== JSON.stringify(before.services[id]))
      what.push(`changed service #${id}`)
  return what.length > 0 ? what : ['nothing visible (the same state, signed again)']
}
