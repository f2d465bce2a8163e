/**
 * The end of a move from a plain PDS (nothing of ours installed), in the best order a plain PDS
 * allows (spec/dialect-plain-pds.md, "Completion"): with the user's code in hand, what was
 * written since our import comes over as a diff (`getRepo?since=`, verified over the held repo)
 * with its blobs, the source signs the PLC operation (`identity.signPlcOperation`, the user's
 * rotation keys first, the old server's dropped), a last diff brings writes made meanwhile; the
 * shared `TransferCompletion` checks, submits and activates, and then the source is deactivated.
 * It cannot be deactivated earlier: the reference PDS deletes every OAuth session of an account
 * deactivated over OAuth, and refuses tokens of a deactivated account, so nothing could be read
 * or signed after it. Invariant: the source stays active until PLC names us, so a failure before
 * leaves the account working where it was.
 */
import type { AccountSink } from './account-sink.ts'
import { forEachBounded } from './bounded-each.ts'
import type { DidResolver } from './did-resolver.ts'
import type { EngineLimits } from './engine-limits.ts'
import { blobsMissing } from './import-failure.ts'
import type { FailureReason, InboundTransfer, InboundTransferStore } from './inbound-transfer.ts'
import { IncompleteDiffError } from './layered-staging.ts'
import { type SourceClient, SourceError } from './source-client.ts'
import { sourceHeadRev } from './source-head.ts'
import { fetchBlob } from './sync-blob-fetch.ts'
import { importRepoFromSync } from './sync-repo-import.ts'
import { withRetries } from './sync-retry.ts'
import { toFailure } from './transfer-failure.ts'

/** A step the user answers at the code step (the source is still active), and why. */
export class SigningRefusal extends Error {
  override readonly name = 'SigningRefusal'
  constructor(
    readonly reason: FailureReason,
    message: string,
  ) {
    super(message)
  }
}

/** What the signer needs of the engine. */
export interface PlainPdsSignerOptions {
  sink: AccountSink
  store: InboundTransferStore
  resolver: DidResolver
  serviceUrl: string
  limits: EngineLimits
}

/** The inputs the user gave with their code (`InboundTransfer.completion`). */
type Completion = NonNullable<InboundTransfer['completion']>

/** Obtains the source's signed PLC operation for a move, in a dialect's own way. */
export interface OperationSigner {
  sign(t: InboundTransfer, client: SourceClient, completion: Completion): Promise<unknown>
  /**
   * The source's part after activation here, if the dialect has one; `client` is undefined when
   * this process has no session with the source (lost in a restart). Returns why it failed.
   */
  afterActivation?(t: InboundTransfer, client: SourceClient | undefined): Promise<string | undefined>
}

/** Asks a plain PDS to email the user the code that authorizes the PLC operation. */
export async function requestPlainPlcCode(client: SourceClient): Promise<void> {
  const res = await client.fetch('/xrpc/com.atproto.identity.requestPlcOperationSignature', {
    method: 'POST',
  })
  if (!res.ok) throw await SourceError.from(res, 'requestPlcOperationSignature')
}

export class PlainPdsSigner implements OperationSigner {
  constructor(protected readonly options: PlainPdsSignerOptions) {}

  /**
   * Brings the held repo up to the source's head, has the source sign the operation, and
   * returns it as `{ signedPlcOperation }`, unchecked (the caller checks it). Throws
   * `SigningRefusal` when the user must act (a wrong code, missing blobs, a refusal).
   */
  async sign(t: InboundTransfer, client: SourceClient, completion: Completion): Promise<unknown> {
    try {
      await this.options.store.update(t.transferId, { stage: 'catchingUp' })
      await this.catchUp(t, client, completion)
      await this.options.store.update(t.transferId, { stage: 'signing' })
      // The old server's own keys (its recommended rotation keys for this account: its PLC key
      // and any recovery key of its operator) leave with it: kept, they would let it take the
      // DID back. The source of a v1 move drops its key itself (D8); a plain PDS signs what it is
      // given. The change is stored before signing, so the operation is checked against it.
      const theirs = await this.sourceRotationKeys(client)
      completion.newRotationKeys = completion.newRotationKeys.filter((k) => !theirs.includes(k))
      // A plain PDS spends the code on the signature: asked again after a lost answer (this
      // server killed mid-call), it refuses, and the user is told why and what to do.
      const askedBefore = completion.signAskedAt !== undefined
      completion.signAskedAt ??= Date.now()
      await this.options.store.update(t.transferId, { completion })
      const res = await this.post(client, 'com.atproto.identity.signPlcOperation', {
        token: completion.plcToken,
        rotationKeys: completion.newRotationKeys,
        verificationMethods: { atproto: t.signingKey },
        services: { atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: this.options.serviceUrl } },
      })
      if (!res.ok) {
        const err = await SourceError.from(res, 'signPlcOperation')
        throw new SigningRefusal(
          'SourceRefused',
          err.status === 400 ? codeRefused(askedBefore, err) : err.message,
        )
      }
      const body = (await res.json().catch(() => undefined)) as { operation?: unknown } | undefined
      // Writes made while it signed: the last look at the source before PLC names us.
      await this.catchUp(t, client, completion)
      return { signedPlcOperation: body?.operation }
    } catch (err) {
      if (err instanceof SigningRefusal) throw err
      const failure = toFailure(err)
      throw new SigningRefusal(failure.reason, failure.message)
    }
  }

  /**
   * Once PLC names us and the account is active here: deactivates it at the source, the last
   * call of the move (on the reference PDS it also ends every OAuth session of the account,
   * ours included). A call that fails, or no session at all, is judged by the source's public
   * status: a deactivation whose answer was lost when this server restarted is done. Returns why
   * the account is still active there, for the user to deactivate it themselves.
   */
  async afterActivation(t: InboundTransfer, client: SourceClient | undefined): Promise<string | undefined> {
    let why =
      'this server lost its session with your old server before it could deactivate your account there'
    if (client) {
      try {
        await this.call(client, 'com.atproto.server.deactivateAccount', {})
        return undefined
      } catch (err) {
        why = (err as Error).message
      }
    }
    return (await sourceDeactivated(t)) ? undefined : why
  }

  /** Brings over what was written since the import: the repo as a diff, then its blobs not held. */
  protected async catchUp(t: InboundTransfer, client: SourceClient, completion: Completion): Promise<void> {
    const { sink, store, resolver, limits } = this.options
    const held = await store.get(t.transferId)
    const head = await sourceHeadRev(client, t.did)
    if (!held?.repo || head === held.repo.rev) return
    const { signingKey } = await resolver.resolve(t.did)
    const pull = (since?: string) =>
      withRetries(limits.retry, () =>
        importRepoFromSync({
          client,
          sink,
          did: t.did,
          signingKey,
          stallTimeoutMs: limits.stallTimeoutMs,
          ...(since !== undefined && { since }),
        }),
      )
    const pulled = await pull(held.repo.rev).catch((err: unknown) => {
      if (err instanceof IncompleteDiffError) return pull()
      throw err
    })
    const { repo } = pulled
    await store.putReferencedBlobs(t.transferId, repo.blobCids)
    const missing: string[] = []
    await forEachBounded([...repo.blobCids], limits.blobConcurrency, async (cid) => {
      if (await sink.hasBlob(t.did, cid)) return
      const outcome = await withRetries(limits.retry, () =>
        fetchBlob({
          client,
          sink,
          did: t.did,
          cid,
          maxBlobSize: limits.maxBlobSize,
          stallTimeoutMs: limits.stallTimeoutMs,
        }),
      )
      if ('missing' in outcome) missing.push(cid)
    })
    const bytes = held.catchUpBytes ?? { repo: 0, total: 0 }
    await store.update(t.transferId, {
      repo: { rev: repo.rev, commitCid: repo.commitCid },
      missingBlobs: missing,
      catchUps: (held.catchUps ?? 0) + 1,
      catchUpBytes: { repo: bytes.repo + pulled.bytes, total: bytes.total + pulled.bytes },
      progress: { ...held.progress, records: repo.records, blobsMissing: missing.length },
    })
    if (missing.length > 0 && !completion.acceptMissingBlobs) {
      throw blobsMissing(missing)
    }
  }

  /** The rotation keys the source recommends for the account: its own (none if it will not say). */
  protected async sourceRotationKeys(client: SourceClient): Promise<string[]> {
    const res = await client
      .fetch('/xrpc/com.atproto.identity.getRecommendedDidCredentials')
      .catch(() => undefined)
    if (!res?.ok) return []
    const body = (await res.json().catch(() => ({}))) as { rotationKeys?: unknown }
    return Array.isArray(body.rotationKeys) ? body.rotationKeys.filter((k) => typeof k === 'string') : []
  }

  private async call(client: SourceClient, nsid: string, body: unknown): Promise<void> {
    const res = await this.post(client, nsid, body)
    if (!res.ok) throw await SourceError.from(res, nsid.split('.').at(-1) as string)
  }

  protected post(client: SourceClient, nsid: string, body: unknown): Promise<Response> {
    return client.fetch(`/xrpc/${nsid}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
  }
}

/** Why a plain PDS refused the code, and the user's next action. */
function codeRefused(askedBefore: boolean, err: SourceError): string {
  return askedBefore
    ? `your current server already used this code for a signature that never reached this server (the move was interrupted); ask for a new code: ${err.message}`
    : `your current server did not accept the code (wrong or expired): ${err.message}`
}

/** Whether the source's public `getRepoStatus` says the account is deactivated there (false if it will not say). */
async function sourceDeactivated(t: InboundTransfer): Promise<boolean> {
  const url = `${t.sourceUrl.replace(/\/+$/, '')}/xrpc/com.atproto.sync.getRepoStatus?did=${encodeURIComponent(t.did)}`
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) }).catch(() => undefined)
  if (!res?.ok) return false
  const body = (await res.json().catch(() => ({}))) as { active?: unknown; status?: unknown }
  return body.active === false && body.status === 'deactivated'
}
