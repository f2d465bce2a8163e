/**
 * The user's answer at the code step, taken for completion: the PLC code, the rotation keys the
 * operation must carry (the user's own first, if they gave one, then ours: decision 9), and
 * whether they accept blobs still missing; then the completion runs. A transfer whose
 * completion was interrupted is continued from its recorded stage instead.
 *
 * Invariant: nothing is recorded unless every check passed; once recorded (stage `signing`),
 * a crash continues from the record and the completion is never started over. The password the
 * user chose is held in memory only, never stored.
 */
import type { AccountSink } from './account-sink.ts'
import { checkNewPassword, type HeldPasswords } from './chosen-password.ts'
import type { DidResolver } from './did-resolver.ts'
import { EngineError } from './engine-error.ts'
import type { InboundTransfer, InboundTransferStore } from './inbound-transfer.ts'
import { moveRotationKeys, RotationKeyError } from './rotation-keys.ts'
import type { SourceClient } from './source-client.ts'
import { sourceHeadRev } from './source-head.ts'
import { COMPLETION_STAGES } from './transfer-completion.ts'

/** What the user completes a move with. */
export interface CompletionRequest {
  plcToken: string
  /** The session of a fresh sign-in at the source (the one this process held may be gone). */
  client?: SourceClient
  acceptMissingBlobs?: boolean
  /** A `did:key` the user holds, put first in the new rotation keys. */
  userRotationKey?: string
  /** The password the user chose for this server, set at activation (kept in memory only). */
  password?: string
}

/** What completing with a code needs of the engine. */
export interface CompletionRequestContext {
  store: InboundTransferStore
  sink: AccountSink
  resolver: DidResolver
  /** Our PLC rotation key (`did:key`). */
  rotationKey: string
  /** The durable completion: one run per transfer at a time. */
  completion: {
    run(transferId: string): Promise<InboundTransfer>
    settled(transferId: string): Promise<void>
  }
  /** The authorized source session of each transfer. */
  sessions: Map<string, SourceClient>
  passwords: HeldPasswords
}

/**
 * Completes `transferId` with the user's code, or continues its interrupted completion; a
 * completed transfer is returned as it is. Throws `EngineError` for what the user must change
 * first (nothing recorded then).
 */
export async function completeWithCode(
  ctx: CompletionRequestContext,
  transferId: string,
  params: CompletionRequest,
): Promise<InboundTransfer> {
  if (params.password !== undefined) checkNewPassword(ctx.sink, params.password)
  await ctx.completion.settled(transferId)
  const t = await ctx.store.get(transferId)
  if (!t) throw new EngineError('TransferNotFound', `no transfer ${transferId}`)
  if (params.client) ctx.sessions.set(transferId, params.client)
  if (t.stage === 'activated') return t
  if (COMPLETION_STAGES.has(t.stage)) return ctx.completion.run(transferId)
  await recordCompletion(ctx, t, ctx.sessions.get(transferId), params)
  return ctx.completion.run(transferId)
}

/**
 * Checks that `t` waits for its code and may complete, and records the code and the keys on it
 * (stage `signing`). `client` is the source session this process holds for it.
 */
async function recordCompletion(
  ctx: CompletionRequestContext,
  t: InboundTransfer,
  client: SourceClient | undefined,
  params: CompletionRequest,
): Promise<void> {
  const { transferId } = t
  if (t.stage !== 'awaitingPlcToken' || !t.signingKey) {
    throw new EngineError(
      'InvalidState',
      `transfer ${transferId} is ${t.status}/${t.stage}, not waiting for a PLC token`,
    )
  }
  if (!client) throw new EngineError('InvalidState', 'no authorized session with the source; sign in again')
  // Missing blobs judged against a head that has moved since may be ones a later write dropped
  // (an edited or deleted post): the source then answers 409, and the catch-up at its paused,
  // final head judges them again. Against a head that held still they are missing for good.
  if (t.missingBlobs.length > 0 && !params.acceptMissingBlobs) {
    const head = await sourceHeadRev(client, t.did)
    if (head === undefined || head === t.repo?.rev) {
      throw new EngineError(
        'InvalidState',
        `${t.missingBlobs.length} blobs are missing: ${t.missingBlobs.join(', ')}`,
      )
    }
  }
  const identity = await ctx.resolver.resolve(t.did).catch((err: unknown) => {
    throw new EngineError(
      'PlcUnreachable',
      `the identity directory did not answer (${(err as Error).message}); try again in a few minutes`,
    )
  })
  let newRotationKeys: string[]
  try {
    newRotationKeys = moveRotationKeys(identity.rotationKeys, ctx.rotationKey, params.userRotationKey)
  } catch (err) {
    if (err instanceof RotationKeyError) throw new EngineError('InvalidRotationKey', err.message)
    throw err
  }
  // Never stored: a password travels from the user's form to the sink, after the source
  // accepted the code that came with it (whoever holds only the page's URL cannot set it).
  ctx.passwords.hold(transferId, params.password)
  await ctx.store.update(transferId, {
    status: 'completing',
    stage: 'signing',
    failure: undefined,
    completion: {
      plcToken: params.plcToken,
      newRotationKeys,
      ...(params.userRotationKey && { userRotationKey: params.userRotationKey }),
      ...(params.acceptMissingBlobs && { acceptMissingBlobs: true }),
    },
  })
}
