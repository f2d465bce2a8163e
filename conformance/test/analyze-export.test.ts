import { describe, expect, it } from 'vitest'
import { analyzeExport, type ExportCapture, type ViolationCode } from '../src/suite/index.ts'
import type { FrameNegativeVector } from '../src/vectors/negative-vectors.ts'
import type { TransferVector } from '../src/vectors/transfer-vectors.ts'
import { FILES, readVectorFile } from '../src/vectors/vector-files.ts'

const b64u = (hex: string) => Buffer.from(hex, 'hex').toString('base64url')

/** A capture of `stream` as the response to an exportAccount encrypted to the vector's key. */
function captureOf(base: TransferVector, did: string, transferId: string, stream: string): ExportCapture {
  return {
    format: 'atproto-transfer-capture',
    version: 1,
    capturedAt: new Date(0).toISOString(),
    sourceUrl: 'https://source.invalid',
    did,
    transferId,
    request: { did, transferId, algorithm: base.algorithm },
    response: {
      status: 200,
      headers: {
        'content-type': 'application/octet-stream',
        'atproto-transfer-enc': base.encBase64url,
        'atproto-transfer-algorithm': base.algorithm,
      },
    },
    bodyComplete: true,
    recipientKey: {
      kty: 'OKP',
      crv: 'X25519',
      x: b64u(base.pkR),
      d: b64u(base.skR),
      kid: 'vector',
      alg: base.algorithm as 'HPKE-3',
      use: 'enc',
    },
    body: Buffer.from(stream, 'hex'),
  }
}

/** Our decoder's reason for each negative vector, as the analyzer names the rule. */
const EXPECTED: Record<string, ViolationCode> = {
  FrameAuthFailed: 'FrameAuthFailed',
  FrameOutOfOrder: 'FrameNumbering',
  ContentTypeTooLong: 'InvalidContentType',
  TruncatedHeader: 'TruncatedHeader',
  TruncatedFrame: 'TruncatedFrame',
}
const FRAME_LEVEL = new Set<string>(Object.values(EXPECTED))

/** The analyzer behind the source checks and `inspect` is an independent decoder: hold it to the vectors. */
describe('export analyzer on the byte-exact vectors', async () => {
  const transfer = await readVectorFile<{ vectors: TransferVector[] }>(FILES.transfer)
  const negative = await readVectorFile<{ frameVectors: FrameNegativeVector[] }>(FILES.negative)
  const byName = new Map(transfer.vectors.map((v) => [v.name, v]))

  it.each(transfer.vectors.map((v) => [v.name, v] as const))(
    '%s: every frame authenticates',
    async (_, v) => {
      const a = await analyzeExport(captureOf(v, v.did, v.transferId, v.stream))
      expect(a.frames.map((f) => f.auth)).toEqual(v.frames.map(() => 'ok'))
      expect(a.violations.filter((x) => FRAME_LEVEL.has(x.code) || x.code.endsWith('Header'))).toEqual([])
    },
  )

  it.each(negative.frameVectors.map((v) => [v.name, v] as const))('%s', async (_, v) => {
    const base = byName.get(v.base)
    if (!base) throw new Error(`no base vector ${v.base}`)
    const a = await analyzeExport(captureOf(base, v.did, v.transferId, v.stream))
    const frameViolations = a.violations.filter((x) => FRAME_LEVEL.has(x.code))
    if (v.expectedError === null) {
      expect(frameViolations).toEqual([])
      return
    }
    const code = EXPECTED[v.expectedError]
    expect(code, `unmapped ${v.expectedError}`).toBeDefined()
    expect(frameViolations.map((x) => x.code)).toContain(code)
    // The frames the vector says verify before the error do verify here too.
    expect(a.frames.slice(0, v.framesBeforeError).every((f) => f.auth === 'ok')).toBe(true)
  })
})
