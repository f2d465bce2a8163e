/**
 * The reader for a source serving the current draft (spec/dialect-draft.md): its JSON
 * `exportAccount` first (capabilities negotiated, the private state imported into the account,
 * created deactivated here), then the repo, blobs and (if negotiated) preferences over the sync
 * endpoints through `PlainPdsReader` (the same streaming verifier, hash-checked blobs, recorded
 * cursor), then (if negotiated and this destination has a sink for it) the account's permissioned
 * data over proposal 0016's methods, and ends by asking the source for the PLC code once the data
 * is held (D9).
 *
 * Invariant: the capabilities used are the ones recorded on the transfer, set from the source's
 * answer; a resume repeats exportAccount only under `resumable`, and without it lists blobs from
 * the start (what is held is skipped here, which asks nothing of the source).
 */
import { CAPABILITY } from '@pds-transfer/core'
import type { AccountSink } from './account-sink.ts'
import type { DidResolver } from './did-resolver.ts'
import { draftCapabilitiesFor, exportDraftAccount } from './draft-export-client.ts'
import type { EngineLimits } from './engine-limits.ts'
import type { InboundTransfer, InboundTransferStore } from './inbound-transfer.ts'
import type { PlainPdsPullResult, PlainPdsReader } from './plain-pds-reader.ts'
import type { SourceClient } from './source-client.ts'
import { importPermissionedData } from './space-import.ts'
import type { PermissionedDataSink } from './space-sink.ts'
import { withRetries } from './sync-retry.ts'
import { toFailure } from './transfer-failure.ts'

export interface DraftReaderOptions {
  sink: AccountSink
  store: InboundTransferStore
  resolver: DidResolver
  limits: EngineLimits
  /** Pulls the data over the sync endpoints once the export answered. */
  plain: PlainPdsReader
  /**
   * Where permissioned data (proposal 0016) is imported; without it `permissioned-data` is not
   * asked for and a source's spaces stay behind.
   */
  spaces?: PermissionedDataSink
}

export class DraftReader {
  constructor(private readonly options: DraftReaderOptions) {}

  /**
   * Runs or resumes the pull of a draft transfer. A refused or malformed export is recorded as
   * the transfer's failure (`SourceRefused`, `StreamInvalid`, `AccountStateInvalid`) and
   * returned, like the sync pull's own failures; `signal` stops it as `PlainPdsReader.pull` does.
   */
  async pull(
    transferId: string,
    client: SourceClient,
    options: { signal?: AbortSignal } = {},
  ): Promise<InboundTransfer | PlainPdsPullResult['transfer']> {
    const { store } = this.options
    let t = await store.get(transferId)
    if (!t) throw new Error(`no transfer ${transferId}`)
    const resuming = t.capabilities !== undefined
    if (!resuming || t.capabilities?.includes(CAPABILITY.resumable)) {
      try {
        t = await this.exportAccount(t, client)
      } catch (err) {
        if (options.signal?.aborted) throw options.signal.reason
        const failure = toFailure(err)
        return store.update(transferId, { status: 'failed', stage: 'failed', failure })
      }
    }
    const capabilities = t.capabilities ?? []
    const { spaces } = this.options
    // Without `resumable` the source gave the cursor no meaning across attempts: list again.
    if (resuming && !capabilities.includes(CAPABILITY.resumable) && t.blobCursor !== undefined) {
      t = await store.update(transferId, { blobCursor: undefined })
    }
    const result = await this.options.plain.pull(transferId, client, {
      ...(options.signal && { signal: options.signal }),
      preferences: capabilities.includes(CAPABILITY.preferences),
      accountEmail: false,
      ...(spaces &&
        capabilities.includes(CAPABILITY.permissionedData) && {
          // After the preferences, before the PLC code (spec/permissioned-data.md).
          extra: async ({ did, signingKey, client: pulling }) => ({
            missing: await importPermissionedData(spaces, {
              client: pulling,
              did,
              signingKey,
              blobs: this.options.sink,
              limits: this.options.limits,
            }),
          }),
        }),
    })
    return result.transfer
  }

  /** The draft's exportAccount: the account created here (deactivated), its private state stored. */
  private async exportAccount(t: InboundTransfer, client: SourceClient): Promise<InboundTransfer> {
    const { sink, store, resolver, limits } = this.options
    const identity = await resolver.resolve(t.did)
    const exported = await withRetries(limits.retry, () =>
      exportDraftAccount(client, {
        did: t.did,
        transferId: t.transferId,
        stallTimeoutMs: limits.stallTimeoutMs,
        capabilities: draftCapabilitiesFor(this.options.spaces !== undefined),
      }),
    )
    await sink.createDeactivatedAccount(
      t.did,
      identity.handle === undefined ? {} : { handle: identity.handle },
    )
    await sink.putAccountState(t.did, exported.state)
    return store.update(t.transferId, { capabilities: exported.capabilities })
  }
}
