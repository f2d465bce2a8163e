import type { SourceClient } from './source-client.ts'

/**
 * How our pages get the user's authorization at the source PDS. The real one is OAuth (the
 * destination as client of the source's authorization server); tests may stand in. One callback
 * serves every flow (`/migrate/callback`): a flow other than a move names where the browser goes
 * back to (`returnTo`), and the callback sends it there instead of starting a move.
 */
export interface SourceAuthorizer {
  /** Where to send the user's browser to authorize us at `sourceUrl` for `did`. */
  authorize(params: {
    did: string
    sourceUrl: string
    /** The scope to ask for (default: what a move from that source needs). */
    scope?: string
    /** A path of ours to come back to after the callback (default: start or continue a move). */
    returnTo?: string
  }): Promise<URL>
  /** Completes the authorization from the callback's query; the client acts for `did`. */
  callback(query: URLSearchParams): Promise<{ did: string; client: SourceClient; returnTo?: string }>
}

/**
 * The callback did not complete (declined at the source, expired, refused) for a flow that asked
 * to come back to `returnTo`: the callback sends the browser there to say so.
 */
export class AuthorizationNotCompleted extends Error {
  override readonly name = 'AuthorizationNotCompleted'
  constructor(
    readonly returnTo: string,
    /** The user declined at the source (`access_denied`). */
    readonly declined: boolean,
    message: string,
  ) {
    super(message)
  }
}
