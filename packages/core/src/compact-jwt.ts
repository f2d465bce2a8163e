/** A compact JWS split into its parts: header and payload decoded, the signing input and signature as bytes. */
export interface CompactJwt {
  header: Record<string, unknown>
  payload: Record<string, unknown>
  /** `base64url(header) "." base64url(payload)`, what the signature covers. */
  signingInput: Uint8Array
  signature: Uint8Array
}

/** Splits a compact JWS; `undefined` when it is not three base64url parts of JSON objects. */
export function parseCompactJwt(token: string): CompactJwt | undefined {
  const parts = token.split('.')
  if (parts.length !== 3) return undefined
  const [h, p, s] = parts as [string, string, string]
  try {
    const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'))
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'))
    if (!isObject(header) || !isObject(payload)) return undefined
    return {
      header,
      payload,
      signingInput: new TextEncoder().encode(`${h}.${p}`),
      signature: new Uint8Array(Buffer.from(s, 'base64url')),
    }
  } catch {
    return undefined
  }
}

/** A compact JWS of `header` and `payload` signed by `sign` (raw signature bytes, e.g. ES256K's r||s). */
export async function signCompactJwt(
  header: Record<string, unknown>,
  payload: Record<string, unknown>,
  sign: (input: Uint8Array) => Promise<Uint8Array>,
): Promise<string> {
  const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(payload))}`
  const signature = await sign(new TextEncoder().encode(input))
  return `${input}.${Buffer.from(signature).toString('base64url')}`
}

function b64(s: string): string {
  return Buffer.from(s, 'utf8').toString('base64url')
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}
