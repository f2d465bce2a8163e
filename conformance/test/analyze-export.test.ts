import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Secp256k1Keypair } from '@atproto/crypto'
import { cidForRawBytes } from '@atproto/lex-data'
import {
  blobCid,
  CONTENT_TYPE,
  encodeBlobpack,
  FrameEncoder,
  generateTransferKey,
  jwkPublicKeyBytes,
  setupSender,
} from '@pds-transfer/core'
import { createTransferId } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from '../src/cli-main.ts'
import { fixtureBytes } from '../src/fixtures/build-account.ts'
import { buildRepoCar, type RepoAuthor, tid } from '../src/fixtures/repo-car.ts'
import { REPO_SPEC_CASES } from '../src/fixtures/repo-spec-cases.ts'
import type { CraftedFrame } from '../src/harness/crafted-source.ts'
import { collect } from '../src/harness/hostile-streams.ts'
import {
  analyzeExport,
  type ExportCapture,
  inspectCapture,
  type ViolationCode,
  writeCapture,
} from '../src/suite/index.ts'
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

/** A capture of `frames`, correctly sealed for a fresh recipient key, as a source would answer. */
async function sealedCapture(
  did: string,
  frames: CraftedFrame[],
  signingKey?: string,
): Promise<ExportCapture> {
  const recipientKey = generateTransferKey({ alg: 'HPKE-3' })
  const transferId = createTransferId()
  const { enc, keys } = await setupSender({
    algorithm: 'HPKE-3',
    recipientPublicKey: jwkPublicKeyBytes(recipientKey),
    did,
    transferId,
  })
  const encoder = new FrameEncoder(keys)
  const chunks: Uint8Array[] = []
  for (const f of frames)
    for await (const c of encoder.encodeFrame(f.contentType, f.bytes, f.bytes.length)) chunks.push(c)
  return {
    format: 'atproto-transfer-capture',
    version: 1,
    capturedAt: new Date(0).toISOString(),
    sourceUrl: 'https://source.invalid',
    did,
    transferId,
    request: { did, transferId, algorithm: 'HPKE-3' },
    response: {
      status: 200,
      headers: {
        'content-type': 'application/octet-stream',
        'atproto-transfer-enc': Buffer.from(enc).toString('base64url'),
        'atproto-transfer-algorithm': 'HPKE-3',
      },
    },
    bodyComplete: true,
    ...(signingKey && { signingKey }),
    recipientKey,
    body: Buffer.concat(chunks),
  }
}

const carFrame = (bytes: Uint8Array): CraftedFrame => ({ contentType: CONTENT_TYPE.repoCar, bytes })

/** Issue 17: the analysis judges a source's CAR by the repository spec, as our destination does. */
describe('export analyzer on repo CARs (the destination verifier)', () => {
  let author: RepoAuthor
  beforeAll(async () => {
    author = { did: 'did:plc:analyzeexport000000000000', key: await Secp256k1Keypair.create() }
  })
  const byName = (name: string) => {
    const c = REPO_SPEC_CASES.find((x) => x.name === name)
    if (!c) throw new Error(`no repo spec case ${name}`)
    return c
  }

  it.each(REPO_SPEC_CASES)('$verdict: $name', async (c) => {
    const capture = await sealedCapture(author.did, [carFrame(await c.build(author))], author.key.did())
    const a = await analyzeExport(capture)
    const repo = a.violations.filter((v) => v.code === 'RepoInvalid')
    if (c.verdict === 'accept') {
      expect(repo).toEqual([])
      expect(a.car?.verified).toBe('ok')
    } else {
      expect(repo.map((v) => v.frame)).toEqual([0])
      expect(repo[0]?.message).toMatch(c.message as RegExp)
    }
  })

  it('two roots: accepted (the spec allows more roots; @atproto/repo refuses them), with and without the key', async () => {
    const car = await byName('a CAR header with two roots, the first the commit').build(author)
    const keyed = await analyzeExport(await sealedCapture(author.did, [carFrame(car)], author.key.did()))
    expect(keyed.violations).toEqual([])
    expect(keyed.car).toMatchObject({ verified: 'ok', records: 5 })
    const keyless = await analyzeExport(await sealedCapture(author.did, [carFrame(car)]))
    expect(keyless.violations).toEqual([])
    expect(keyless.car).toMatchObject({ verified: 'not-checked', records: 5 })
    expect(keyless.car?.detail).toMatch(/signature not checked/)
  })

  it('a rev that is not a TID: refused (which @atproto/repo accepts), with and without the key', async () => {
    const car = await byName('a commit rev that is not a TID ("hello")').build(author)
    for (const key of [author.key.did(), undefined]) {
      const a = await analyzeExport(await sealedCapture(author.did, [carFrame(car)], key))
      expect(a.violations.map((v) => v.code)).toEqual(['RepoInvalid'])
      expect(a.violations[0]?.message).toMatch(/rev "hello" is not a TID/)
      expect(a.car?.verified).toBe('failed')
    }
  })

  it('without the key, a commit signed by another key is not a violation, but the signature is not ok', async () => {
    const car = await byName('a commit signed by a key that is not the DID document’s').build(author)
    const a = await analyzeExport(await sealedCapture(author.did, [carFrame(car)]))
    expect(a.violations).toEqual([])
    expect(a.car?.verified).toBe('not-checked')
  })
})

/** Issue 17 part 4: blobs of a refused blobpack frame are not received. */
describe('export analyzer and inspect: a refused blobpack', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pds-transfer-analyze-'))
  })
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('counts none of its blobs, not even those before the bad entry', async () => {
    const author = { did: 'did:plc:refusedblobpack00000000000', key: await Secp256k1Keypair.create() }
    const [a, b, c] = [1, 2, 3].map((seed) => fixtureBytes(2000 + seed, seed)) as [
      Uint8Array,
      Uint8Array,
      Uint8Array,
    ]
    const records = await Promise.all(
      [a, b, c].map(async (bytes, i) => ({
        path: `app.bsky.feed.post/${tid(1_735_000_000_000_000 + i * 1_000_000)}`,
        value: {
          $type: 'app.bsky.feed.post',
          text: `post ${i}`,
          createdAt: new Date(Date.UTC(2026, 0, 1)).toISOString(),
          embed: {
            $type: 'app.bsky.embed.images',
            images: [
              {
                alt: '',
                image: {
                  $type: 'blob',
                  ref: await cidForRawBytes(bytes),
                  mimeType: 'image/png',
                  size: bytes.length,
                },
              },
            ],
          },
        },
      })),
    )
    const car = await buildRepoCar(author, { records })
    const entry = (cidOf: Uint8Array, bytes: Uint8Array) => ({
      cid: blobCid(cidOf),
      size: bytes.length,
      open: async function* () {
        yield bytes
      },
    })
    const pack = (entries: ReturnType<typeof entry>[]) => collect(encodeBlobpack(entries))
    const capture = await sealedCapture(
      author.did,
      [
        carFrame(car),
        { contentType: CONTENT_TYPE.blobpack, bytes: await pack([entry(a, a)]) },
        // b is whole; c's entry carries other bytes, so the whole frame is refused.
        {
          contentType: CONTENT_TYPE.blobpack,
          bytes: await pack([entry(b, b), entry(c, fixtureBytes(c.length, 99))]),
        },
      ],
      author.key.did(),
    )
    const { analysis, text } = await inspectCapture(capture)
    expect([...analysis.blobs.keys()]).toEqual([blobCid(a).toString()])
    expect(analysis.blobEntries).toBe(1)
    expect(new Set(analysis.missingBlobs)).toEqual(new Set([blobCid(b).toString(), blobCid(c).toString()]))
    expect(analysis.violations.map((v) => [v.code, v.frame])).toEqual([
      ['BlobpackInvalid', 2],
      ['BlobMissing', undefined],
    ])
    expect(text).toMatch(/blobs: 1 distinct in 1 entries, \d+ bytes; 3 referenced by records, 2 missing/)

    // The CLI prints the same.
    const folder = join(dir, 'refused-blobpack')
    await writeCapture(folder, capture)
    let stdout = ''
    const code = await runCli(['inspect', folder, '--json', '-'], {
      out: (t) => {
        stdout += t
      },
      err: () => {},
    })
    expect(code).toBe(1)
    const json = JSON.parse(stdout) as { blobs: { distinct: number; entries: number; missing: string[] } }
    expect(json.blobs).toMatchObject({ distinct: 1, entries: 1, referenced: 3 })
    expect(json.blobs.missing).toHaveLength(2)
  })
})
