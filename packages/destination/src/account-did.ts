/** A handle resolver a page is given (e.g. the PDS's own, or an XRPC `resolveHandle`). */
export type HandleResolver = (handle: string) => Promise<string | undefined>

/**
 * The DID a person typed, or the one their handle resolves to: with `resolveHandle` when the
 * operator gave one, otherwise by the handle's `https://<handle>/.well-known/atproto-did`. Any
 * failure is "not found" (the page says what to type instead), never an error page.
 */
export async function accountDid(
  wanted: string,
  resolveHandle?: HandleResolver,
): Promise<string | undefined> {
  if (wanted.startsWith('did:')) return wanted
  if (!wanted) return undefined
  try {
    if (resolveHandle) return await resolveHandle(wanted)
    const res = await fetch(`https://${wanted}/.well-known/atproto-did`, {
      signal: AbortSignal.timeout(5000),
    })
    const found = res.ok ? (await res.text()).trim() : ''
    return found.startsWith('did:') ? found : undefined
  } catch {
    return undefined
  }
}
