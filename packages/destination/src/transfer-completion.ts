import type * as plc from '@did-plc/lib'
import { NSID } from '@pds-transfer/core'
import type { AccountSink } from './account-sink.ts'
import { EngineError } from './engine-error.ts'
import { backoff, type EngineLimits } from './engine-limits.ts'
import type {
  FailureReason,
  InboundTransfer,
  InboundTransferStore,
  TransferStage,
} from './inbound-transfer.ts'
import { type OperationSigner, SigningRefusal } from './plain-pds-signer.ts'
import { checkPlcMove, PlcOperationError } from './plc-check.ts'
import { type SourceClient, SourceError } from './source-client.ts'

/** Stages of completion: each is recorded before its step is taken, and `advance` continues from it. */
export const COMPLETION_STAGES: ReadonlySet<TransferStage> = new Set([
  'signing',
  'catchingUp',
  'submittingPlc',
  'activating',
])

/** Refusals of completeTransfer that the user answers at the code step, as the user is told them. */
const BACK_TO_CODE: Record<string, string> = {
  InvalidPlcToken: 'your current server did not accept the code (wrong or expired)',
  RepoChangedDuringTransfer:
    'your account kept changing (new posts or other writes from your apps) while the move was finishing; pause them and try again',
  RateLimitExceeded: 'too many codes were tried; have a new one emailed, then enter it',
}

/** Catch-up rounds before completion gives up on a repo that keeps moving (the user retries). */
const MAX_CATCH_UPS = 3

/** What completion needs of the engine that owns it. */
export interface CompletionContext {
  options: {
    sink: AccountSink
    store: InboundTransferStore
    plc: plc.Client
    serviceUrl: string
    rotationKey: string
    watchHours?: number
  }
  limits: EngineLimits
  /** The authorized source session of a transfer, if this process has one. */
  session(transferId: string): SourceClient | undefined
  /** Imports what the source wrote since the verified head (decision 6). */
  catchUp(transfer: InboundTransfer, client: SourceClient, round: number): Promise<void>
  fail(transferId: string, reason: FailureReason, message: string): Promise<InboundTransfer>
  forget(transferId: string): void
  /** The password the user chose with their code, if this process still holds it (once). */
  takePassword(transferId: string): string | undefined
  /** The signer of a transfer whose source is not a v1 one (a plain PDS); v1's completeTransfer otherwise. */
  signer?(transfer: InboundTransfer): OperationSigner | undefined
}

/**
 * Completion as a durable state machine (spec/completion.md):
 * `signing` (the user's code and the requested keys are stored; the source is asked to sign,
 * and answers a repeated request with the same operation) → `submittingPlc` (the checked
 * operation is stored, then sent) → `activating` (PLC names us) → `activated`.
 * Invariant: a step's inputs are on the record before the step is taken, and every stage is
 * resumable by `advance`, which first asks PLC whether the move already landed. Nothing here
 * pulls the whole account again. A step that cannot go on returns the transfer to
 * `awaitingPlcToken` (the user's next action: enter a code, or have a new one sent) or
 * fails it with a named reason; a transport error never leaves it in between.
 */
export class TransferCompletion {
  /** Completions running in this process: a second `complete` waits for the first. */
  private readonly inflight = new Map<string, Promise<InboundTransfer>>()

  constructor(private readonly ctx: CompletionContext) {}

  /** Continues the completion of `transferId` from its recorded stage (one run per transfer at a time). */
  run(transferId: string): Promise<InboundTransfer> {
    const running = this.inflight.get(transferId)
    if (running) return running
    const next = this.advance(transferId).finally(() => this.inflight.delete(transferId))
    this.inflight.set(transferId, next)
    return next
  }

  /** Resolves when this process's completion of `transferId` has stopped (either way). */
  async settled(transferId: string): Promise<void> {
    await this.inflight.get(transferId)?.catch(() => {})
  }

  private async advance(transferId: string): Promise<InboundTransfer> {
    try {
      return await this.step(transferId)
    } catch (err) {
      // The step's inputs are kept; the record says why it stopped, for the page's "Finish the move".
      if (err instanceof EngineError && err.code === 'PlcUnreachable') {
        await this.ctx.options.store
          .update(transferId, { failure: { reason: 'PlcUnreachable', message: err.message } })
          .catch(() => {})
      }
      throw err
    }
  }

  private async step(transferId: string): Promise<InboundTransfer> {
    const { store } = this.ctx.options
    for (;;) {
      const t = await store.get(transferId)
      if (!t) throw new EngineError('TransferNotFound', `no transfer ${transferId}`)
      switch (t.stage) {
        case 'signing':
        case 'catchingUp':
          await this.requestSignature(t)
          break
        case 'submittingPlc':
          await this.submitOperation(t)
          break
        case 'activating':
          return this.activate(t)
        default:
          return t
      }
    }
  }

  /** Asks the source for the signed operation, catching up while its repo moves. */
  private async requestSignature(t: InboundTransfer): Promise<void> {
    const { store } = this.ctx.options
    if (await this.plcNamesUs(t)) {
      await store.update(t.transferId, { stage: 'activating' })
      return
    }
    const completion = t.completion
    const client = this.ctx.session(t.transferId)
    if (!completion || !client) {
      await this.backToCode(t, 'Interrupted', 'the destination lost its session with your current server')
      throw new EngineError('InvalidState', 'no authorized session with the source; sign in again')
    }
    const signer = this.ctx.signer?.(t)
    if (signer) {
      let body: unknown
      try {
        body = await signer.sign(t, client, completion)
      } catch (err) {
        if (!(err instanceof SigningRefusal)) throw err
        await this.backToCode(t, err.reason, err.message)
        throw new EngineError('InvalidState', err.message)
      }
      return this.acceptOperation(t, body, completion)
    }
    for (let round = 1; ; round++) {
      await store.update(t.transferId, { status: 'completing', stage: 'signing' })
      let res: Response
      try {
        res = await this.retrying(async () => {
          const r = await client.fetch(`/xrpc/${NSID.completeTransfer}`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({
              did: t.did,
              transferId: t.transferId,
              plcSignatureToken: completion.plcToken,
              newPdsEndpoint: this.ctx.options.serviceUrl,
              newSigningKey: t.signingKey,
              newRotationKeys: completion.newRotationKeys,
            }),
          })
          // A 5xx may be a source that stopped midway; it answers a repeat with the same operation.
          if (r.status >= 500) throw await SourceError.from(r, 'completeTransfer')
          return r
        })
      } catch (err) {
        const message = `your current server did not answer (${(err as Error).message})`
        await this.backToCode(t, 'SourceUnreachable', message)
        throw new EngineError('SourceUnreachable', `${message}; try again in a few minutes`)
      }
      if (res.ok) return this.acceptOperation(t, await res.json().catch(() => undefined), completion)
      const err = await SourceError.from(res, 'completeTransfer')
      if (err.error === 'RepoChangedDuringTransfer' && round <= MAX_CATCH_UPS) {
        await this.ctx.catchUp(t, client, round)
        continue
      }
      // A wrong or expired code, a repo that keeps moving, too many attempts: the user acts again.
      const told = BACK_TO_CODE[err.error]
      if (told) {
        // The record is what the user is shown (/migrate, getTransferStatus); the caller gets the wire error.
        await this.backToCode(t, 'SourceRefused', told)
        throw err
      }
      await this.ctx.fail(t.transferId, 'SourceRefused', err.message)
      return
    }
  }

  /** Checks the source's operation and stores it before anything submits it. */
  private async acceptOperation(
    t: InboundTransfer,
    body: unknown,
    completion: NonNullable<InboundTransfer['completion']>,
  ): Promise<void> {
    let op: plc.Operation
    try {
      op = await checkPlcMove(
        this.ctx.options.plc,
        (body as { signedPlcOperation?: unknown })?.signedPlcOperation,
        {
          did: t.did,
          pdsEndpoint: this.ctx.options.serviceUrl,
          signingKey: t.signingKey as string,
          rotationKey: this.ctx.options.rotationKey,
          requestedRotationKeys: completion.newRotationKeys,
          ...(completion.userRotationKey && { firstRotationKey: completion.userRotationKey }),
        },
      )
    } catch (err) {
      if (err instanceof PlcOperationError) {
        await this.ctx.fail(t.transferId, 'PlcOperationInvalid', err.message)
        return
      }
      throw err
    }
    await this.ctx.options.store.update(t.transferId, {
      stage: 'submittingPlc',
      plcOperation: op as unknown as Record<string, unknown>,
    })
  }

  /** Sends the stored operation; a lost answer is told apart by asking PLC what it now says. */
  private async submitOperation(t: InboundTransfer): Promise<void> {
    const { store, plc: directory } = this.ctx.options
    if (!(await this.plcNamesUs(t))) {
      try {
        await this.retrying(
          () => directory.sendOperation(t.did, t.plcOperation as unknown as plc.Operation),
          (err) => httpStatus(err) === undefined || (httpStatus(err) as number) >= 500,
        )
      } catch (err) {
        if (!(await this.plcNamesUs(t))) {
          const message = (err as Error).message
          if (httpStatus(err) !== undefined && (httpStatus(err) as number) < 500) {
            // The operation can never be used now (e.g. the source superseded it when it took
            // the account back): the user starts over.
            await this.ctx.fail(
              t.transferId,
              'PlcSubmitFailed',
              `the PLC directory refused the move (${message}); your account stays at your current server`,
            )
            return
          }
          throw new EngineError('PlcUnreachable', `the PLC directory did not answer (${message}); try again`)
        }
      }
    }
    await store.update(t.transferId, { stage: 'activating', failure: undefined })
  }

  /** Activates the account once the PLC directory names us; on failure the transfer stays `activating`, for a retry. */
  private async activate(t: InboundTransfer): Promise<InboundTransfer> {
    const { store, sink } = this.ctx.options
    try {
      await sink.activate(t.did)
    } catch (err) {
      const message = (err as Error).message
      await store.update(t.transferId, { failure: { reason: 'ActivationFailed', message } })
      throw new EngineError(
        'ActivationFailed',
        `the PLC directory now names this PDS, but activation failed: ${message}`,
      )
    }
    const password = this.ctx.takePassword(t.transferId)
    let passwordChosen: boolean | undefined
    if (password && sink.setPassword) {
      // The move is done either way; a password that could not be set is said on the result page.
      passwordChosen = await sink.setPassword(t.did, password).then(
        () => true,
        () => false,
      )
    }
    const signer = this.ctx.signer?.(t)
    const client = this.ctx.session(t.transferId)
    // The move is done; a source that could not be deactivated is the user's to do, and said.
    const sourceLeftActive = signer?.afterActivation ? await signer.afterActivation(t, client) : undefined
    this.ctx.forget(t.transferId)
    return store.update(t.transferId, {
      failure: undefined,
      completion: undefined,
      ...(passwordChosen !== undefined && { passwordChosen }),
      ...(sourceLeftActive !== undefined && { sourceLeftActive }),
      status: 'completed',
      stage: 'activated',
      watchUntil: Date.now() + (this.ctx.options.watchHours ?? 72) * 3600_000,
    })
  }

  /** Whether the DID's PLC document already points at us with our key (the move landed). */
  private async plcNamesUs(t: InboundTransfer): Promise<boolean> {
    let data: Awaited<ReturnType<plc.Client['getDocumentData']>>
    try {
      data = await this.retrying(() => this.ctx.options.plc.getDocumentData(t.did))
    } catch (err) {
      throw new EngineError('PlcUnreachable', `the PLC directory did not answer (${(err as Error).message})`)
    }
    const pds = data.services.atproto_pds?.endpoint ?? ''
    return (
      normalizeUrl(pds) === normalizeUrl(this.ctx.options.serviceUrl) &&
      data.verificationMethods.atproto === t.signingKey
    )
  }

  /** Back to the code step with the reason shown; the stored code is dropped (it may be spent). */
  private async backToCode(t: InboundTransfer, reason: FailureReason, message: string): Promise<void> {
    await this.ctx.options.store.update(t.transferId, {
      status: 'importing',
      stage: 'awaitingPlcToken',
      completion: undefined,
      failure: { reason, message },
    })
  }

  /** Runs `step`, retrying transport errors with the engine's backoff. */
  private async retrying<T>(
    step: () => Promise<T>,
    retryable: (err: unknown) => boolean = () => true,
  ): Promise<T> {
    const { attempts } = this.ctx.limits.retry
    for (let attempt = 1; ; attempt++) {
      try {
        return await step()
      } catch (err) {
        const transport = !(err instanceof SourceError) || err.status >= 500
        if (!transport || !retryable(err) || attempt >= attempts) throw err
        await new Promise((resolve) => setTimeout(resolve, backoff(this.ctx.limits.retry, attempt)))
      }
    }
  }
}

/** The HTTP status of a failed PLC client call (`PlcClientError`: 500 for a transport error), if any. */
function httpStatus(err: unknown): number | undefined {
  const status = (err as { status?: unknown }).status
  return typeof status === 'number' ? status : undefined
}

export function normalizeUrl(url: string): string {
  return url.replace(/\/+$/, '').toLowerCase()
}
