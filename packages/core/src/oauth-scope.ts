import { NSID } from './lexicons.ts'
import { SPACE_MIGRATION_SCOPE } from './space-scope.ts'

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

/**
 * What a destination asks a plain PDS (no transfer endpoints) for (spec/dialect-plain-pds.md,
 * "Scopes", as the reference PDS enforces them): the repo and blobs are public while the account
 * is active, preferences need their `rpc:` permission, the PLC code and signature `identity:*`,
 * the deactivation at the end `account:status?action=manage`, the email (`getSession`)
 * `account:email`.
 */
export const PLAIN_PDS_OAUTH_SCOPE = [
  'atproto',
  'rpc:app.bsky.actor.getPreferences?aud=*',
  'identity:*',
  'account:status?action=manage',
  'account:email',
].join(' ')

/**
 * What /keys asks any PDS for to put the user's rotation key first: the reference PDS checks
 * `identity:*` (`permissions.assertIdentity({ attr: '*' })`) on requestPlcOperationSignature,
 * signPlcOperation and submitPlcOperation alike, and nothing else.
 */
export const KEYS_OAUTH_SCOPE = ['atproto', 'identity:*'].join(' ')

/**
 * What a destination asks a source serving the current draft for (spec/dialect-draft.md,
 * "Scopes"): `rpc:` for the draft's exportAccount, completeTransfer and getTransferStatus (with an
 * `aud`, decision 5), getPreferences, and `identity:*`, which the reference PDS requires for
 * `requestPlcOperationSignature` (the draft's `rpc:` scope for it grants nothing there). The
 * account is created here directly, so no service-auth scope; the source deactivates itself in
 * completeTransfer, so no `account:status`; the email comes in `privateState`.
 */
export const DRAFT_OAUTH_SCOPE = [
  'atproto',
  ...[NSID.exportAccount, NSID.completeTransfer, NSID.getTransferStatus].map((nsid) => `rpc:${nsid}?aud=*`),
  'rpc:app.bsky.actor.getPreferences?aud=*',
  'identity:*',
].join(' ')

/** Every scope a destination's client metadata lists: it may ask for any of the sets above. */
export const MIGRATION_CLIENT_SCOPE = [
  ...new Set(
    [
      TRANSFER_OAUTH_SCOPE,
      PLAIN_PDS_OAUTH_SCOPE,
      DRAFT_OAUTH_SCOPE,
      KEYS_OAUTH_SCOPE,
      // Asked of a plain PDS only when its server lists it (destination's plain-oauth-scope.ts).
      SPACE_MIGRATION_SCOPE,
    ].flatMap((scope) => scope.split(' ')),
  ),
].join(' ')
