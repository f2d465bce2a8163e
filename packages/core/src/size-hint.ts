/**
 * Extension `size-hint` (spec/extensions.md): the source states, in a response header, about
 * how many plaintext bytes and blobs the stream it is starting will carry, so the destination
 * can show a determinate progress bar. Advisory only: nothing is verified against it (the end
 * manifest does that), and a malformed value is ignored.
 */
export interface SizeHint {
  /** Plaintext bytes of the stream's repo CAR and blobpack entries (small frames left out). */
  bytes: number
  /** Blobs the stream's blobpacks will carry. */
  blobs: number
}

/** Response header of exportAccount carrying the hint. */
export const SIZE_HINT_HEADER = 'atproto-transfer-size-hint'

/** `bytes=<n>, blobs=<n>` */
export function formatSizeHint(hint: SizeHint): string {
  return `bytes=${hint.bytes}, blobs=${hint.blobs}`
}

/** The hint in a header value, or undefined if it is absent or malformed. */
export function parseSizeHint(value: string | null | undefined): SizeHint | undefined {
  if (!value) return undefined
  const fields = new Map<string, number>()
  for (const part of value.split(',')) {
    const match = /^\s*(bytes|blobs)=(\d{1,16})\s*$/.exec(part)
    if (!match || fields.has(match[1] as string)) return undefined
    fields.set(match[1] as string, Number(match[2]))
  }
  const bytes = fields.get('bytes')
  const blobs = fields.get('blobs')
  if (bytes === undefined || blobs === undefined || !Number.isSafeInteger(bytes)) return undefined
  return { bytes, blobs }
}
