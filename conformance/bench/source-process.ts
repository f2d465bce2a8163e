/**
 * The sending PDS of a transfer benchmark, in its own process so that its peak RSS is its own.
 * MODE=build: builds the account (SHAPE, JSON `AccountShape`) into DIR, sends `{ did }`, exits.
 * MODE=serve: serves DIR on PORT; answers `{ id, issue: clientId }` with a token for DID and
 * `{ id, rss: true }` with `{ maxRssMiB }` (see `ChildPeer`). Env also: PLC_URL.
 */
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { peakRssMiB } from '../../packages/core/bench/peak-rss.ts'
import { buildAccount } from '../src/fixtures/build-account.ts'
import { startSourceServer } from '../src/harness/source-server.ts'

const SCOPES = [
  'com.atproto.transfer.exportAccount',
  'com.atproto.transfer.completeTransfer',
  'com.atproto.transfer.getTransferStatus',
  'com.atproto.sync.getBlob',
]
const env = (name: string) => process.env[name] ?? ''
// Each served run is a new transfer: forget the transfers of earlier runs over the same data.
if (env('MODE') !== 'build') {
  for (const suffix of ['', '-wal', '-shm'])
    await rm(join(env('DIR'), `transfers.sqlite${suffix}`), { force: true })
}
const source = await startSourceServer({
  plc: { url: env('PLC_URL'), close: async () => {} },
  dir: env('DIR'),
  ...(env('PORT') && { port: Number(env('PORT')) }),
  exportsPerDestinationPerHour: 1_000_000,
})

if (env('MODE') === 'build') {
  const account = await buildAccount(source.store, {
    plcUrl: env('PLC_URL'),
    pdsUrl: env('PDS_URL') || source.url,
    pdsRotationKey: source.rotationKey,
    shape: JSON.parse(env('SHAPE')),
  })
  await source.close()
  process.send?.({ ready: true, did: account.did }, () => process.exit(0))
} else {
  process.on('message', (msg: { id: number; issue?: string; rss?: boolean }) => {
    const result = msg.issue
      ? source.auth.issue({ did: env('DID'), clientId: msg.issue }, SCOPES)
      : { maxRssMiB: peakRssMiB() }
    process.send?.({ id: msg.id, result })
  })
  process.send?.({ ready: true, url: source.url })
}
