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
