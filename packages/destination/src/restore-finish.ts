/**
 * The end of a restore (spec/recovery.md, "Restoring the account onto a new PDS", steps 3 and
 * 4): the operation the user's key signs, planned over PLC's log as it is now, and its check,
 * storage and submission through the same durable completion a move uses. Invariant: nothing
 * reaches PLC that PLC's own rules, the user's key and this server's names do not all accept, and
 * a password or email is taken only together with the user's signature (D24, R4).
 */
import type * as plc from '@did-plc/lib'
import type { AccountSink } from './account-sink.ts'
import { EngineError } from './engine-error.ts'
import type { InboundTransfer, InboundTransferStore } from './inbound-transfer.ts'
import { isRestore } from './restore-admission.ts'
import {
  checkRestoreOperation,
  type RestoreOperationRequest,
  restoreOperationRequest,
} from './restore-completion.ts'
import { COMPLETION_STAGES, normalizeUrl } from './transfer-completion.ts'

/** What the user finishes a restore with. */
export interface RestoreCompletion {
  /** The operation `restoreOperation` prepared, with the user's `sig`; absent when PLC already names us. */
  signedOperation?: unknown
  acceptMissingBlobs?: boolean
  /** With `signedOperation` only: the password the user chose here, set at activation (kept in memory). */
  password?: string
  /** With `signedOperation` only: the email to sign in with here, where the copy held none (unconfirmed). */
  email?: string
}

/** What a restore's end needs of the engine. */
export interface RestoreFinishDeps {
  options: {
    store: InboundTransferStore
    sink: AccountSink
    plc: plc.Client
    serviceUrl: string
    rotationKey: string
    clock?: () => Date
  }
  /** The engine's durable completion (submittingPlc, activating). */
  completion: {
    run(transferId: string): Promise<InboundTransfer>
    settled(transferId: string): Promise<void>
  }
  /** Keeps the chosen password in memory for activation (undefined: none). */
  holdPassword(transferId: string, password: string | undefined): void
  /** Throws `EngineError('InvalidPassword')` for a password this server cannot set. */
  checkPassword(password: string): void
}

export class RestoreFinish {
  constructor(private readonly deps: RestoreFinishDeps) {}

  /**
   * What the user signs: the PLC operation that points the identity here, planned over PLC's log
   * as it is now (a change made since the restore began is accounted for), with its bytes to sign.
   * Refused unless the copy is wholly held (`awaitingRecovery`).
   */
  async operation(transferId: string): Promise<RestoreOperationRequest> {
    const { options } = this.deps
    const t = await this.awaitingRecovery(transferId)
    return restoreOperationRequest(options.plc, t, options, options.clock?.())
  }

  /**
   * Finishes a restore: `signedOperation` (the user's, from `operation` or `pds-identity recover`)
   * is checked by PLC's rules and for what it does, stored, submitted; then the account is
   * activated here and watched as after a move. Without it, PLC must already name this server
   * (the user submitted the operation themselves). Called again after an interruption, it
   * continues from the recorded step.
   */
  async complete(transferId: string, params: RestoreCompletion = {}): Promise<InboundTransfer> {
    const { options, completion } = this.deps
    if ((params.password !== undefined || params.email !== undefined) && params.signedOperation === undefined)
      throw new EngineError(
        'InvalidPassword',
        'a password or email is chosen together with the operation your key signs; after the restore, set a password by email',
      )
    if (params.password !== undefined) this.deps.checkPassword(params.password)
    if (params.email !== undefined && !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(params.email))
      throw new EngineError('InvalidEmail', `${params.email} is not an email address`)
    await completion.settled(transferId)
    const current = await options.store.get(transferId)
    if (current && isRestore(current) && COMPLETION_STAGES.has(current.stage))
      return completion.run(transferId)
    if (current?.stage === 'activated') return current
    const t = await this.awaitingRecovery(transferId)
    // What the copy lacks is lost unless another copy has it: the user decides, having seen the list.
    if (t.missingBlobs.length > 0 && !params.acceptMissingBlobs)
      throw new EngineError(
        'InvalidState',
        `${t.missingBlobs.length} blobs the records use are not in the copy: ${t.missingBlobs.join(', ')}`,
      )
    if (params.signedOperation === undefined) {
      const data = await options.plc.getDocumentData(t.did).catch((err: unknown) => {
        throw new EngineError(
          'PlcUnreachable',
          `the PLC directory did not answer (${(err as Error).message})`,
        )
      })
      const namesUs =
        normalizeUrl(data.services.atproto_pds?.endpoint ?? '') === normalizeUrl(options.serviceUrl) &&
        data.verificationMethods.atproto === t.signingKey
      if (!namesUs)
        throw new EngineError(
          'InvalidState',
          'PLC does not name this server yet: sign the operation (restoreOperation) and send it, or submit it with pds-identity recover --submit',
        )
      await options.store.update(transferId, {
        status: 'completing',
        stage: 'activating',
        failure: undefined,
      })
      return completion.run(transferId)
    }
    const op = await checkRestoreOperation(options.plc, t, params.signedOperation, options)
    // The user's signature is what lets this request choose the password (a page's URL alone must
    // not, D24); it goes to the sink at activation and is never stored. An email the copy lacked
    // is what a sign-in (and a password reset) needs here.
    if (params.email)
      await options.sink.putAccountState(t.did, { email: params.email, emailConfirmed: false })
    this.deps.holdPassword(transferId, params.password || undefined)
    await options.store.update(transferId, {
      status: 'completing',
      stage: 'submittingPlc',
      failure: undefined,
      plcOperation: op as unknown as Record<string, unknown>,
    })
    return completion.run(transferId)
  }

  /** A restore whose copy is held, waiting for the user's operation; refused otherwise. */
  private async awaitingRecovery(
    transferId: string,
  ): Promise<InboundTransfer & { restore: NonNullable<InboundTransfer['restore']>; signingKey: string }> {
    const t = await this.deps.options.store.get(transferId)
    if (!t) throw new EngineError('TransferNotFound', `no transfer ${transferId}`)
    if (!isRestore(t))
      throw new EngineError('InvalidState', `transfer ${transferId} is a move, not a restore`)
    if (t.stage !== 'awaitingRecovery' || !t.signingKey)
      throw new EngineError(
        'InvalidState',
        `transfer ${transferId} is ${t.status}/${t.stage}, not holding the whole copy yet`,
      )
    return t as InboundTransfer & { restore: NonNullable<InboundTransfer['restore']>; signingKey: string }
  }
}
