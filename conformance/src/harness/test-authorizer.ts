import { randomBytes } from 'node:crypto'
import { NSID } from '@pds-transfer/core'
import { bearerSourceClient, type SourceAuthorizer } from '@pds-transfer/destination'
import type { TestTokenAuth } from './test-auth.ts'

/** Every transfer scope (the NSIDs) a destination asks a source for. */
export const TRANSFER_SCOPES = [
  NSID.exportAccount,
  NSID.completeTransfer,
  NSID.getTransferStatus,
  NSID.requestPlcToken,
  'com.atproto.sync.getBlob',
]

/**
 * Stands in for OAuth in tests of the `/migrate` UI over our test source: "signing in" at the
 * source is an immediate redirect back with a code, exchanged for a test bearer token. The real
 * flow (PAR, PKCE, DPoP against the reference PDS's provider) is the OAuth authorizer's test.
 */
export class TestSourceAuthorizer implements SourceAuthorizer {
  private readonly pending = new Map<string, { did: string; sourceUrl: string }>()

  constructor(
    private readonly auth: TestTokenAuth,
    private readonly clientId: string,
    private readonly callbackUrl: string,
  ) {}

  async authorize(params: { did: string; sourceUrl: string }): Promise<URL> {
    const state = randomBytes(12).toString('base64url')
    this.pending.set(state, params)
    const url = new URL(this.callbackUrl)
    url.searchParams.set('code', state)
    url.searchParams.set('state', state)
    return url
  }

  async callback(query: URLSearchParams) {
    const grant = this.pending.get(query.get('state') ?? '')
    if (!grant || query.get('code') !== query.get('state'))
      throw new Error('unknown or replayed authorization')
    this.pending.delete(query.get('state') as string)
    const token = this.auth.issue({ did: grant.did, clientId: this.clientId }, TRANSFER_SCOPES)
    return { did: grant.did, client: bearerSourceClient(grant.sourceUrl, token) }
  }
}
