/**
 * Decrypts one frame of `--mib` MiB (default 1024) and reports throughput and
 * peak RSS: the decoder must stay bounded whatever the frame size. Run with
 * `pnpm bench` (all benchmarks) or `tsx packages/core/bench/frame-memory.ts --mib 1024`.
 */
import { createHash, generateKeyPairSync } from 'node:crypto'
import { parseArgs } from 'node:util'
import type { TransferAlgorithm } from '../src/algorithms.ts'
import { decodeFrames } from '../src/frame-decoder.ts'
import { FrameEncoder } from '../src/frame-encoder.ts'
import { stageFrame } from '../src/frame-staging.ts'
import { setupRecipient, setupSender } from '../src/key-schedule.ts'
import { peakRssMiB } from './peak-rss.ts'

export interface FrameMemoryResult {
  algorithm: TransferAlgorithm
  mode: 'stream' | 'stage-to-disk'
  mib: number
  seconds: number
  mbPerSecond: number
  peakRssMiB: number
}

export async function runFrameMemory(
  algorithm: TransferAlgorithm,
  mib: number,
  mode: FrameMemoryResult['mode'],
): Promise<FrameMemoryResult> {
  const { publicKey, privateKey } = generateKeyPairSync('x25519')
  const raw = (k: string | undefined) => Uint8Array.from(Buffer.from(k!, 'base64url'))
  const did = 'did:plc:benchbenchbench'
  const transferId = '019537a1-7e28-7def-8c56-3a8b69e2d471'
  const { enc, keys } = await setupSender({
    algorithm,
    recipientPublicKey: raw(publicKey.export({ format: 'jwk' }).x),
    did,
    transferId,
  })
  const recipient = await setupRecipient({
    algorithm,
    recipientPrivateKey: raw(privateKey.export({ format: 'jwk' }).d),
    enc,
    did,
    transferId,
  })
  const block = new Uint8Array(1 << 20).map((_, i) => (i * 31) & 0xff)
  async function* plaintext() {
    for (let i = 0; i < mib; i++) yield block
  }
  const length = mib * block.length
  const wire = new FrameEncoder(keys).encodeFrame(
    'application/vnd.atproto.transfer.blobpack',
    plaintext(),
    length,
  )
  const start = performance.now()
  const hash = createHash('sha256')
  for await (const frame of decodeFrames(wire, { keys: recipient })) {
    if (mode === 'stream') {
      for await (const chunk of frame.plaintext()) hash.update(chunk)
    } else {
      const staged = await stageFrame(frame)
      for await (const chunk of staged.open()) hash.update(chunk)
      await staged.dispose()
    }
  }
  hash.digest()
  const seconds = (performance.now() - start) / 1000
  return {
    algorithm,
    mode,
    mib,
    seconds: Number(seconds.toFixed(2)),
    mbPerSecond: Math.round(length / 1e6 / seconds),
    peakRssMiB: Math.round(peakRssMiB()),
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      mib: { type: 'string', default: '1024' },
      alg: { type: 'string', default: 'HPKE-3' },
      mode: { type: 'string', default: 'stream' },
    },
  })
  const result = await runFrameMemory(
    values.alg as TransferAlgorithm,
    Number(values.mib),
    values.mode as FrameMemoryResult['mode'],
  )
  console.log(JSON.stringify(result))
}
