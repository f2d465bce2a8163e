import type { SourceClient } from './source-client.ts'

/**
 * How the `/migrate` UI gets the user's authorization at the source PDS. The real one is OAuth
 * (the destination as client of the source's authorization server); tests may stand in.
 */
export interface SourceAuthorizer {
  /** Where to send the user's browser to authorize us at `sourceUrl` for `did`. */
  authorize(params: { did: string; sourceUrl: string }): Promise<URL>
  /** Completes the authorization from the callback's query; the client acts for `did`. */
  callback(query: URLSearchParams): Promise<{ did: string; client: SourceClient }>
}
