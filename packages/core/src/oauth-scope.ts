import { NSID } from './lexicons.ts'

/**
 * The OAuth scope a destination asks the source's authorization server for: `atproto` plus one
 * `rpc:` permission per transfer endpoint (decision 5: bare `rpc:<nsid>` does not parse in the
 * permission spec and is silently dropped). The audience is `*` because the provider matches
 * requested scopes against the client metadata by exact string, and a destination's metadata
 * cannot list every source's service DID in advance (decision D18); the token itself stays
 * bound to the one source PDS that issued it (its `aud` claim).
 */
export const TRANSFER_OAUTH_SCOPE = [
  'atproto',
  ...[NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus, NSID.requestPlcToken].map(
    (nsid) => `rpc:${nsid}?aud=*`,
  ),
].join(' ')
