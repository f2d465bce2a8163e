/**
 * The end of a move from a source serving the current draft (spec/dialect-draft.md §5): what was
 * written since the import comes over first (`getRepo?since=`, as for a plain PDS), then the
 * draft's `completeTransfer` has the source sign the PLC operation and deactivate the account.
 * The rotation keys asked for are the user's (first) and ours, without the old server's: the
 * draft maps `newRotationKeys` straight to `rotationKeys`, so whatever is asked is what a literal
 * draft source signs. The shared `TransferCompletion` checks the operation before it is submitted.
 */
import { NSID } from '@pds-transfer/core'
import type { InboundTransfer } from './inbound-transfer.ts'
import { PlainPdsSigner, SigningRefusal } from './plain-pds-signer.ts'
import { type SourceClient, SourceError } from './source-client.ts'
import { toFailure } from './transfer-failure.ts'

type Completion = NonNullable<InboundTransfer['completion']>

/** completeTransfer refusals the user answers with a (new) code, as they are told them. */
const CODE_REFUSALS = new Set(['InvalidPlcToken', 'RateLimitExceeded'])

export class DraftSigner extends PlainPdsSigner {
  override async sign(t: InboundTransfer, client: SourceClient, completion: Completion): Promise<unknown> {
    try {
      await this.options.store.update(t.transferId, { stage: 'catchingUp' })
      await this.catchUp(t, client, completion)
      await this.options.store.update(t.transferId, { stage: 'signing' })
      // Stored before the call, so the operation is checked against exactly what was asked.
      const theirs = await this.sourceRotationKeys(client)
      completion.newRotationKeys = completion.newRotationKeys.filter((k) => !theirs.includes(k))
      await this.options.store.update(t.transferId, { completion })
      const res = await this.post(client, NSID.completeTransfer, {
        did: t.did,
        transferId: t.transferId,
        plcSignatureToken: completion.plcToken,
        newPdsEndpoint: this.options.serviceUrl,
        newSigningKey: t.signingKey,
        newRotationKeys: completion.newRotationKeys,
      })
      if (!res.ok) {
        const err = await SourceError.from(res, 'completeTransfer')
        throw new SigningRefusal(
          'SourceRefused',
          CODE_REFUSALS.has(err.error)
            ? `your current server did not accept the code (wrong, expired or tried too often): ${err.message}`
            : err.message,
        )
      }
      return await res.json().catch(() => undefined)
    } catch (err) {
      if (err instanceof SigningRefusal) throw err
      const failure = toFailure(err)
      throw new SigningRefusal(failure.reason, failure.message)
    }
  }

  /** Nothing: the draft's source deactivates the account itself in completeTransfer (§2.2, §6). */
  override async afterActivation(): Promise<string | undefined> {
    return undefined
  }
}
