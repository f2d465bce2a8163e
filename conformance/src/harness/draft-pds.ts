import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startTransferPds, type TransferPds } from '@pds-transfer/atproto-pds'
import { freePort } from './destination-server.ts'
import { emailedPlcToken } from './plain-pds.ts'

/** Preferences are app.bsky routes, served only with an AppView configured; none runs here. */
const NO_APPVIEW = { bskyAppViewUrl: 'http://127.0.0.1:9', bskyAppViewDid: 'did:web:appview.invalid' }

/** A reference PDS whose source role serves only the current draft, and its "mailbox". */
export interface DraftPds extends TransferPds {
  /**
   * The PLC code last "emailed" to the account. A draft destination asks the PDS itself
   * (`requestPlcOperationSignature`), not our source role, so the code is read from the PDS's
   * account database rather than from `onPlcToken`.
   */
  plcToken(did: string): Promise<string | undefined>
}

/**
 * A reference PDS with our adapters whose source role serves the current draft only
 * (spec/dialect-draft.md): no well-known, the draft's JSON exportAccount and completeTransfer, its
 * own OAuth. Its data goes to a fresh temporary directory (removed on close), or to `dataDir`.
 */
export async function startDraftPds(
  plcUrl: string,
  options: {
    dataDir?: string
    port?: number
    /** The capabilities it offers (default: all it implements). */
    capabilities?: string[]
  } = {},
): Promise<DraftPds> {
  const dir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'pds-transfer-draft-')))
  const pds = await startTransferPds({
    dataDir: dir,
    port: options.port ?? (await freePort()),
    plcUrl,
    env: NO_APPVIEW,
    sourceDialects: ['draft'],
    ...(options.capabilities && { draftCapabilities: options.capabilities }),
  })
  return {
    ...pds,
    plcToken: (did) => emailedPlcToken(pds.pds, did),
    async close() {
      await pds.close()
      if (!options.dataDir) await rm(dir, { recursive: true, force: true })
    },
  }
}
