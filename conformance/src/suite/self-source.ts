import { Secp256k1Keypair } from '@atproto/crypto'
import { generateTransferKey, publicJwk } from '@pds-transfer/core'
import { bearerSourceClient } from '@pds-transfer/destination'
import { buildAccount } from '../fixtures/build-account.ts'
import { startKeyHost } from '../harness/key-host.ts'
import type { PlcDirectory } from '../harness/plc-directory.ts'
import { type SourceServer, type SourceServerOptions, startSourceServer } from '../harness/source-server.ts'
import { TRANSFER_SCOPES } from '../harness/test-authorizer.ts'
import type { DraftSourceTarget } from './draft-source-checks.ts'
import type { SourceTarget } from './source-target.ts'

/** Our own source as a suite target, with everything the black-box mode cannot see wired in. */
export interface SelfSource {
  target: SourceTarget
  /** The bearer token in `target.client` (for running the CLI against this source). */
  token: string
  /** The bearer token in `target.otherClient` (a second destination). */
  otherToken: string
  source: SourceServer
  /**
   * The same account as a target of the draft checks (`draftSourceChecks`): our source serves
   * the draft's JSON exportAccount beside the v1 stream. Use a source of its own for it: the
   * draft's exports supersede the v1 checks' transfers (same destination, D21).
   */
  draft: DraftSourceTarget
  /**
   * Lets the draft completion checks run: the code is asked for as a draft destination does
   * (here the SQLite PDS's equivalent of requestPlcOperationSignature), the move submitted.
   */
  enableDraftCompletion(): Promise<void>
  /**
   * Lets the completion checks run: `target.complete` asks for a move to made-up keys with the
   * code from the outbox, submitted to PLC, so the throwaway account really moves (and is
   * deactivated here); the next check run records a fresh export to complete.
   */
  enableCompletion(): Promise<void>
  close(): Promise<void>
}

/**
 * Starts our source plugin (SQLite store) with a test account, two key hosts standing in for
 * two destinations, and a target that also observes the PLC token outbox. `frontUrl` and
 * `wrapSource` let a test run a deliberately broken variant (the suite must then fail).
 */
export async function startSelfSource(options: {
  plc: PlcDirectory
  posts?: number
  blobSizes?: number[]
  /** Serve the suite a different URL than the source's own (a broken proxy in front of it). */
  frontUrl?: (source: SourceServer) => Promise<{ url: string; close(): Promise<void> }>
  /** Wrap the storage the source plugin reads (a broken variant: lost or corrupt blobs). */
  wrapSource?: SourceServerOptions['wrapSource']
  /** The token verifier (a broken variant: one that believes the request's DID). */
  auth?: SourceServerOptions['auth']
}): Promise<SelfSource> {
  const source = await startSourceServer({
    plc: options.plc,
    blobpackTarget: 64 * 1024,
    exportsPerDestinationPerHour: 100,
    ...(options.wrapSource && { wrapSource: options.wrapSource }),
    ...(options.auth && { auth: options.auth }),
  })
  const exp = Math.floor(Date.now() / 1000) + 86400
  const key = generateTransferKey({ alg: 'HPKE-3', exp })
  const otherKey = generateTransferKey({ alg: 'HPKE-4', exp })
  const host = await startKeyHost([publicJwk(key)])
  const otherHost = await startKeyHost([publicJwk(otherKey)])
  const front = options.frontUrl ? await options.frontUrl(source) : undefined
  const url = front?.url ?? source.url
  const account = await buildAccount(source.store, {
    plcUrl: options.plc.url,
    pdsUrl: url,
    pdsRotationKey: source.rotationKey,
    shape: {
      posts: options.posts ?? 60,
      blobSizes: options.blobSizes ?? Array.from({ length: 8 }, (_, i) => 20_000 + i * 1009),
    },
  })
  // Hosted here too, but the tokens are not for it (source.auth.other-account).
  const other = await buildAccount(source.store, {
    plcUrl: options.plc.url,
    pdsUrl: url,
    pdsRotationKey: source.rotationKey,
    shape: { posts: 2 },
  })
  const issue = (clientId: string) => source.auth.issue({ did: account.did, clientId }, TRANSFER_SCOPES)
  const token = issue(host.clientId)
  const otherToken = issue(otherHost.clientId)
  const target: SourceTarget = {
    url,
    did: account.did,
    client: bearerSourceClient(url, token),
    recipientKey: key,
    plcUrl: options.plc.url,
    otherDid: other.did,
    otherClient: { client: bearerSourceClient(url, otherToken), recipientKey: otherKey },
    accountActive: async () => (await source.store.getAccount(account.did))?.status === 'active',
    plcTokenSent: async () => source.store.outbox.some((m) => m.did === account.did),
  }
  const draft: DraftSourceTarget = {
    url,
    did: account.did,
    client: target.client,
    plcUrl: options.plc.url,
    otherDid: other.did,
    ...(target.accountActive && { accountActive: target.accountActive }),
  }
  return {
    target,
    token,
    otherToken,
    source,
    draft,
    async enableDraftCompletion() {
      draft.state = undefined
      draft.complete = {
        plcToken: async () => {
          await source.store.requestPlcToken(account.did)
          return source.store.outbox.filter((m) => m.did === account.did).at(-1)?.token ?? ''
        },
        newPdsEndpoint: 'https://destination.example',
        newSigningKey: (await Secp256k1Keypair.create()).did(),
        newRotationKey: (await Secp256k1Keypair.create()).did(),
        submit: true,
      }
    },
    async enableCompletion() {
      target.recorded = undefined
      target.complete = {
        plcToken: async () => source.store.outbox.filter((m) => m.did === account.did).at(-1)?.token ?? '',
        newPdsEndpoint: 'https://destination.example',
        newSigningKey: (await Secp256k1Keypair.create()).did(),
        newRotationKey: (await Secp256k1Keypair.create()).did(),
        submit: true,
      }
    },
    async close() {
      await front?.close()
      await host.close()
      await otherHost.close()
      await source.close()
    },
  }
}
