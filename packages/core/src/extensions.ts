/**
 * Wire extensions beyond 0014 (spec/extensions.md). Each is advertised in both well-known
 * documents, asked for by the destination in exportAccount's `extensions`, and confirmed by the
 * source in the `Atproto-Transfer-Extensions` response header; a peer that does not list one
 * gets a literal 0014 stream.
 */
export const EXTENSION = {
  /** An authenticated last frame that says what the stream held (decision 1). */
  endManifest: 'end-manifest',
  /** A new exportAccount for the same transferId continues where a broken one stopped (decision 7). */
  resume: 'resume',
  /** `com.atproto.transfer.requestPlcToken`: the user can ask for a fresh token (decision 8). */
  plcTokenRefresh: 'plc-token-refresh',
  /** The source states the stream's size up front, for a determinate progress bar (advisory). */
  sizeHint: 'size-hint',
  /**
   * With `resume`: a catch-up or resumed export whose head moved sends only the repo blocks
   * written since the rev the destination holds (`resume.repoRev`), not the whole CAR.
   */
  repoDiff: 'repo-diff',
} as const

export type Extension = (typeof EXTENSION)[keyof typeof EXTENSION]

/** Response header in which the source confirms the extensions it applied. */
export const EXTENSIONS_HEADER = 'atproto-transfer-extensions'

/** The extensions both lists contain, in `ours` order. */
export function commonExtensions(ours: readonly string[], theirs: readonly string[] | undefined): string[] {
  return ours.filter((e) => theirs?.includes(e))
}

/** Parses the comma-separated header value. */
export function parseExtensionsHeader(value: string | null | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
}
