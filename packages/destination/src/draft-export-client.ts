/**
 * The destination's call of the current draft's `exportAccount` (proposal 0015 §2.1): asks for
 * the capabilities we implement, checks the answer (lexicon, the transferId echoed, the private
 * state's known fields), and returns what may be used. spec/dialect-draft.md §3-4.
 */
import {
  type AccountState,
  accountStateFromJson,
  CAPABILITY,
  NSID,
  usableCapabilities,
  validateDraftExportOutput,
  WireError,
} from '@pds-transfer/core'
import { ImportFailure } from './import-failure.ts'
import { type SourceClient, SourceError } from './source-client.ts'
import { fetchStreaming, readJson } from './sync-retry.ts'

/**
 * What we ask a draft source for: every capability we implement, `permissioned-data` only where
 * the sink can import permissioned data (`draftCapabilitiesFor`).
 */
export const DRAFT_CAPABILITIES: readonly string[] = [
  CAPABILITY.base,
  CAPABILITY.preferences,
  CAPABILITY.resumable,
  CAPABILITY.permissionedData,
]

/** The capabilities a destination asks for: all of `DRAFT_CAPABILITIES` but `permissioned-data` without a sink for it. */
export function draftCapabilitiesFor(importsPermissionedData: boolean): string[] {
  return DRAFT_CAPABILITIES.filter((c) => importsPermissionedData || c !== CAPABILITY.permissionedData)
}

/** Largest answer read: the private state is a few small fields (the draft bounds nothing). */
const MAX_EXPORT_BYTES = 4 * 1024 * 1024

/** A checked draft export: the capabilities both sides have, and the private state to import. */
export interface DraftExport {
  capabilities: string[]
  state: AccountState
  /** Fields of the private state we do not know, ignored (§5). */
  ignoredFields: string[]
}

/**
 * Calls `exportAccount` with the draft's body. A refusal is `ImportFailure('SourceRefused')` with
 * the source's XRPC error; an answer that does not check is `StreamInvalid` or
 * `AccountStateInvalid`, named.
 */
export async function exportDraftAccount(
  client: SourceClient,
  params: {
    did: string
    transferId: string
    stallTimeoutMs: number
    /** What to ask for (default `DRAFT_CAPABILITIES`); only these may come back usable. */
    capabilities?: readonly string[]
  },
): Promise<DraftExport> {
  const asked = params.capabilities ?? DRAFT_CAPABILITIES
  const answer = await fetchStreaming(
    (signal) =>
      client.fetch(`/xrpc/${NSID.exportAccount}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({
          did: params.did,
          transferId: params.transferId,
          capabilities: asked,
        }),
        signal,
      }),
    'exportAccount',
    params.stallTimeoutMs,
    (_res, body) =>
      readJson(body, { maxBytes: MAX_EXPORT_BYTES, what: 'exportAccount', reason: 'StreamInvalid' }),
  ).catch(async (err: unknown) => {
    if (err instanceof SourceError) throw new ImportFailure('SourceRefused', err.message, { cause: err })
    throw err
  })
  let output: ReturnType<typeof validateDraftExportOutput>
  try {
    output = validateDraftExportOutput(answer)
  } catch (err) {
    throw new ImportFailure('StreamInvalid', (err as Error).message, { cause: err })
  }
  if (output.transferId !== params.transferId) {
    throw new ImportFailure(
      'StreamInvalid',
      `exportAccount answered for transfer ${output.transferId}, not ${params.transferId}`,
    )
  }
  try {
    const { state, ignoredFields } = accountStateFromJson(output.privateState)
    return { capabilities: usableCapabilities(asked, output.capabilities), state, ignoredFields }
  } catch (err) {
    if (err instanceof WireError)
      throw new ImportFailure('AccountStateInvalid', `privateState: ${err.message}`, { cause: err })
    throw err
  }
}
