import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startTransferPds, type TransferPds, type TransferPdsOptions } from '@pds-transfer/atproto-pds'
import { freePort } from './destination-server.ts'
import { type PlcDirectory, startPlcDirectory } from './plc-directory.ts'

/** Two reference PDSes with both transfer roles, and the PLC directory they share. */
export interface ReferencePdsPair {
  plc: PlcDirectory
  a: TransferPds
  b: TransferPds
  /** PLC tokens each PDS "emailed", newest last, by DID. */
  plcTokens: Map<string, string[]>
  close(): Promise<void>
}

/** Preferences are app.bsky routes, served only with an AppView configured; none runs here. */
const NO_APPVIEW = { bskyAppViewUrl: 'http://127.0.0.1:9', bskyAppViewDid: 'did:web:appview.invalid' }

/** One reference PDS with our adapters, on a fresh temporary directory that `close` removes. */
export async function startReferencePds(plc: Pick<PlcDirectory, 'namedUrl'>): Promise<TransferPds> {
  const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-reference-'))
  const pds = await startTransferPds({
    dataDir: dir,
    port: await freePort(),
    plcUrl: plc.namedUrl,
    env: NO_APPVIEW,
  })
  return {
    ...pds,
    async close() {
      await pds.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
}

export async function startReferencePdsPair(
  options: Partial<Pick<TransferPdsOptions, 'limits'>> & {
    /** Keep the PDSes' data here (kept on close) instead of a fresh temporary directory. */
    dir?: string
    /** Fixed ports for A and B (default: free ones). */
    ports?: [number, number]
    /** Also told of every PLC token "emailed" (the demo prints them). */
    onPlcToken?: (did: string, token: string) => void
    /** B's pages and OAuth client at an https address in front of it (`startTlsFront`). */
    b?: Pick<TransferPdsOptions, 'pagesUrl' | 'oauthClient'>
  } = {},
): Promise<ReferencePdsPair> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'pds-transfer-reference-')))
  const plc = await startPlcDirectory()
  const plcTokens = new Map<string, string[]>()
  const onPlcToken = (did: string, token: string) => {
    plcTokens.set(did, [...(plcTokens.get(did) ?? []), token])
    options.onPlcToken?.(did, token)
  }
  // Both hand out `.test` handles, which no DNS knows: B asks A, where the accounts to move live.
  const start = async (
    name: string,
    port: number | undefined,
    handleResolverUrl?: string,
    more: Partial<TransferPdsOptions> = {},
  ) =>
    startTransferPds({
      ...more,
      ...(handleResolverUrl && { handleResolverUrl }),
      dataDir: join(dir, name),
      port: port ?? (await freePort()),
      plcUrl: plc.namedUrl,
      onPlcToken,
      env: NO_APPVIEW,
      ...(options.limits && { limits: options.limits }),
    })
  const a = await start('a', options.ports?.[0])
  const b = await start('b', options.ports?.[1], a.url, options.b)
  return {
    plc,
    a,
    b,
    plcTokens,
    async close() {
      await Promise.allSettled([a.close(), b.close()])
      await plc.close()
      if (!options.dir) await rm(dir, { recursive: true, force: true })
    },
  }
}
