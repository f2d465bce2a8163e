/**
 * What a `TransferEngine` is built with: the sink, the store and the keys of this destination,
 * its identity services, and the limits and policies it runs transfers under. Invariant: every
 * durable fact of a transfer lives in `store` and every byte in `sink`; the engine's own memory
 * holds only sessions, passwords and in-flight state, which a restart may lose.
 */
import type * as plc from '@did-plc/lib'
import type { AccountSink } from './account-sink.ts'
import type { DidResolver } from './did-resolver.ts'
import type { EngineLimits } from './engine-limits.ts'
import type { InboundTransfer, InboundTransferStore } from './inbound-transfer.ts'
import type { KeyRing } from './key-ring.ts'
import type { SourceClient } from './source-client.ts'
import type { PermissionedDataSink } from './space-sink.ts'

export interface TransferEngineOptions {
  sink: AccountSink
  store: InboundTransferStore
  keys: KeyRing
  resolver: DidResolver
  plc: plc.Client
  /** Our public PDS URL: the new `atproto_pds` endpoint. */
  serviceUrl: string
  /** Our PLC rotation key (`did:key`), added to the account's rotation keys. */
  rotationKey: string
  limits?: Partial<EngineLimits>
  /** Hours to watch the PLC log for a rollback after completion (72). */
  watchHours?: number
  /**
   * Wire extensions we ask sources for when they advertise them (spec/extensions.md; default:
   * all we implement). `[]` makes this a literal 0014 destination, for interoperability tests.
   */
  extensions?: string[]
  /**
   * After a restart: an authorized client for a transfer's source (e.g. from a durable OAuth
   * session store), so that `recover` resumes the transfer instead of marking it Interrupted.
   */
  restoreClient?: (transfer: InboundTransfer) => Promise<SourceClient | undefined>
  /**
   * CIDs per listBlobs page of a pull over the sync endpoints (1000, the lexicon's maximum). The
   * cursor after each page wholly held is what a resume continues from (spec/dialect-plain-pds.md).
   */
  listBlobsLimit?: number
  /**
   * Where an account's permissioned data (proposal 0016) is imported: with it a draft pull asks
   * for `permissioned-data` (spec/permissioned-data.md); without it spaces are not moved.
   */
  spaces?: PermissionedDataSink
  /** The time a restore's 72-hour window is judged at (default: this machine's clock; tests move it). */
  clock?: () => Date
}
