/**
 * The current draft's `exportAccount` (proposal 0015 §2.1) on our source: JSON in, JSON out, no
 * stream. It records the transfer (so that completeTransfer and getTransferStatus know it),
 * negotiates capabilities (§7) and answers the account's private state without credentials; the
 * destination then pulls the repo, blobs and preferences over the sync endpoints the PDS serves.
 * spec/dialect-draft.md gives the decisions; the v1 stream at the same NSID is untouched.
 */
import {
  CAPABILITY,
  type DraftExportOutput,
  NSID,
  negotiateCapabilities,
  TransferError,
  validateDraftExportInput,
  withoutCredentials,
} from '@pds-transfer/core'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { AccountSource } from './account-source.ts'
import type { TransferAuthVerifier } from './transfer-auth.ts'
import type { SourceTransfer, SourceTransferStore } from './transfer-store.ts'

/**
 * `SourceTransfer.algorithm` of a draft transfer: it has no HPKE suite. It also tells
 * completion that no repo rev was pinned (getRepo is not tied to the transfer, erratum E4).
 */
export const DRAFT_TRANSFER = 'draft-0015'

/** Whether a recorded transfer was started by the draft's JSON exportAccount. */
export function isDraftTransfer(transfer: Pick<SourceTransfer, 'algorithm'>): boolean {
  return transfer.algorithm === DRAFT_TRANSFER
}

/** Capabilities a source supports by default: all the draft defines and we implement, and ours. */
export const DEFAULT_DRAFT_CAPABILITIES: readonly string[] = [
  CAPABILITY.base,
  CAPABILITY.preferences,
  CAPABILITY.resumable,
  CAPABILITY.permissionedData,
]

/**
 * What a source offers a draft destination: `configured` (default: all we implement), with
 * `permissioned-data` only when it serves the 0016 methods (`servesSpaces`), whatever was
 * configured: a capability offered must be one the destination can use.
 */
export function offeredDraftCapabilities(
  configured: readonly string[] | undefined,
  servesSpaces: boolean,
): string[] {
  return (configured ?? DEFAULT_DRAFT_CAPABILITIES).filter(
    (c) => servesSpaces || c !== CAPABILITY.permissionedData,
  )
}

export interface DraftExportOptions {
  source: AccountSource
  store: SourceTransferStore
  auth: TransferAuthVerifier
  /** What this source supports (§7); `preferences` only where the PDS serves getPreferences. */
  capabilities: readonly string[]
  /** Max new transfers per destination per hour, shared with v1. */
  exportsPerDestinationPerHour: number
  /** Ends the v1 stream of a transfer this one replaces (same destination, decision D21). */
  supersede(transferId: string, reason: string): void
  now: () => number
}

const HOUR = 3600_000

/**
 * Answers one draft `exportAccount`. Throws `TransferError`s with the draft's names (§4):
 * `InvalidRequest` for a malformed body, `TransferNotAuthorized` for a token of another account
 * (`sub` ≠ `did`), `AccountNotFound`, `AccountDeactivated`, `TransferAlreadyActive` (another
 * destination's transfer in flight, or a repeat of a transfer that did not negotiate
 * `resumable`), `RateLimitExceeded`.
 */
export async function answerDraftExport(
  request: FastifyRequest,
  reply: FastifyReply,
  opts: DraftExportOptions,
): Promise<DraftExportOutput> {
  const { store, now } = opts
  const input = validateDraftExportInput(request.body)
  const caller = await opts.auth.verify(request, NSID.exportAccount, reply)
  if (caller.did !== input.did) {
    throw new TransferError('TransferNotAuthorized', 'the token was issued for another account')
  }
  const account = await opts.source.getAccount(input.did)
  if (!account) throw new TransferError('AccountNotFound', `${input.did} is not hosted here`)
  if (account.status !== 'active') {
    throw new TransferError('AccountDeactivated', `${input.did} is ${account.status}`)
  }
  const capabilities = negotiateCapabilities(input.capabilities, opts.capabilities)
  const previous = await store.get(input.transferId)
  if (previous && (previous.did !== input.did || previous.clientId !== caller.clientId)) {
    throw new TransferError('InvalidRequest', 'transferId is already used by another transfer')
  }
  if (previous && !isDraftTransfer(previous)) {
    throw new TransferError(
      'InvalidRequest',
      `transfer ${input.transferId} is an encrypted-stream (v1) transfer`,
    )
  }
  if (previous && previous.status !== 'importing') {
    throw new TransferError(
      'InvalidRequest',
      `transfer ${input.transferId} is ${previous.status}: start a new one`,
    )
  }
  // A repeat is a resume (§7, `resumable`): without the capability the draft gives it no meaning.
  if (previous && !capabilities.includes(CAPABILITY.resumable)) {
    throw new TransferError(
      'TransferAlreadyActive',
      `transfer ${input.transferId} is already exported; without the resumable capability start a new transfer`,
    )
  }
  const active = await store.findActive(input.did)
  if (active && active.clientId !== caller.clientId) {
    // Not its transferId: that is the other destination's capability (decision D14).
    throw new TransferError('TransferAlreadyActive', `another destination is transferring ${input.did}`)
  }
  if (!previous) {
    const recent = await store.countCreatedSince(caller.clientId, now() - HOUR)
    if (recent >= opts.exportsPerDestinationPerHour) {
      throw new TransferError('RateLimitExceeded', `${recent} exports for this destination in the last hour`)
    }
    // The same destination starting over replaces its earlier attempt (decision D21).
    if (active) {
      opts.supersede(active.transferId, `superseded by ${input.transferId}`)
      await store.update(active.transferId, {
        status: 'failed',
        error: `superseded by ${input.transferId}`,
        updatedAt: now(),
      })
    }
    await store.create({
      transferId: input.transferId,
      did: input.did,
      clientId: caller.clientId,
      algorithm: DRAFT_TRANSFER,
      // The export call is all the source does before completion: the data is pulled over sync.
      status: 'importing',
      framesSent: 0,
      bytesSent: 0,
      blobsSent: 0,
      createdAt: now(),
      updatedAt: now(),
    })
  } else {
    await store.update(input.transferId, { updatedAt: now() })
  }
  // Credentials never leave (§5, decision D24), whatever the AccountSource returns.
  const privateState = withoutCredentials(await opts.source.getAccountState(input.did))
  return { transferId: input.transferId, capabilities, privateState: { ...privateState } }
}
