import { base58btc } from 'multiformats/bases/base58'

/** Reading what a person typed into the /migrate forms, forgivingly where it is safe. */

/**
 * The PLC code as the PDS issued it (`XXXXX-XXXXX`, upper case): people type it with spaces,
 * in lower case or without the dash, or paste it with the email's line break.
 */
export function normalizeCode(typed: string): string {
  const compact = typed.replace(/\s+/g, '').toUpperCase()
  return /^[A-Z0-9]{10}$/.test(compact) ? `${compact.slice(0, 5)}-${compact.slice(5)}` : compact
}

/** Reads the password fields: the password, nothing (left empty), or why they cannot be used. */
export function readPassword(form: {
  password?: unknown
  password2?: unknown
}): string | { error: string } | undefined {
  const password = String(form.password ?? '')
  const again = String(form.password2 ?? '')
  if (password === '' && again === '') return undefined
  if (password !== again) return { error: 'The two passwords are not the same. Type them again.' }
  return password
}

/** Multicodec varint prefixes of private keys: secp256k1-priv (0x1301), p256-priv (0x1306). */
const PRIVATE_MULTICODECS = [
  [0x81, 0x26],
  [0x86, 0x26],
]

/**
 * Whether a "public key" the user pasted is a private key (hex of 32 bytes, a multibase
 * private key, a JWK or PEM with a private part): the page says so plainly instead of
 * sending a secret anywhere.
 */
export function looksPrivate(typed: string): boolean {
  const t = typed.trim()
  if (/^(0x)?[0-9a-fA-F]{64}$/.test(t) || /PRIVATE KEY/.test(t) || /"d"\s*:/.test(t)) return true
  if (!/^z[1-9A-HJ-NP-Za-km-z]+$/.test(t)) return false
  try {
    const bytes = base58btc.decode(t)
    return PRIVATE_MULTICODECS.some(([a, b]) => bytes[0] === a && bytes[1] === b)
  } catch {
    return false
  }
}

/**
 * The handle or DID in what a person typed: `@alice.example.com`, `alice.example.com`, a DID, or
 * a profile link pasted from an app (`https://bsky.app/profile/alice.example.com`, with a DID, or
 * with a trailing path), or an `at://` URI.
 */
export function accountOf(typed: string): string {
  const t = typed.trim()
  const profile = /^https?:\/\/[^/]+\/profile\/([^/?#]+)/i.exec(t)
  const at = /^at:\/\/([^/?#]+)/i.exec(t)
  const found = profile?.[1] ?? at?.[1] ?? t
  const decoded = decodeURIComponent(found).replace(/^@/, '')
  return decoded.startsWith('did:') ? decoded : decoded.toLowerCase()
}
