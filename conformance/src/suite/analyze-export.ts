import { Secp256k1Keypair } from '@atproto/crypto'
import { decode as cborDecode, encode as cborEncode } from '@atproto/lex-cbor'
import { cidForCbor, isPlainObject, type LexValue } from '@atproto/lex-data'
import {
  CONTENT_TYPE,
  CONTENT_TYPE_ORDER,
  createFrameDecipher,
  decodeAccountState,
  decodeEndManifest,
  type EndManifest,
  EXTENSIONS_HEADER,
  type FrameKeys,
  frameAad,
  isTransferAlgorithm,
  jwkPrivateKeyBytes,
  parseExtensionsHeader,
  parsePreferences,
  readBlobpack,
  setupRecipient,
  WireError,
} from '@pds-transfer/core'
import { verifiedCarBatches, verifyStagedRepo } from '@pds-transfer/destination'
import { MemoryStaging } from '../harness/memory-staging.ts'
import type { ExportCapture } from './export-capture.ts'

/**
 * Named ways an exportAccount response can break the protocol. Checks look for these codes,
 * `inspect` prints them; each names the rule broken, not the symptom.
 */
export type ViolationCode =
  | 'HttpStatus'
  | 'ContentTypeHeader'
  | 'EncHeader'
  | 'AlgorithmHeader'
  | 'ExtensionsHeader'
  | 'BodyIncomplete'
  | 'TruncatedHeader'
  | 'TruncatedFrame'
  | 'InvalidContentType'
  | 'FrameNumbering'
  | 'FrameAuthFailed'
  | 'FrameOrder'
  | 'UnknownContentType'
  | 'RepoInvalid'
  | 'BlobpackInvalid'
  | 'BlobMissing'
  | 'PreferencesInvalid'
  | 'AccountStateInvalid'
  | 'EndManifestInvalid'

export interface Violation {
  code: ViolationCode
  /** Index of the frame in the stream, when the violation is about one. */
  frame?: number
  message: string
}

/** One frame as read from the clear header, and whether it authenticated. */
export interface FrameInfo {
  index: number
  frameNumber: number
  contentType: string
  offset: number
  ciphertextLength: number
  /** `ok`: the tag verified with the key, nonce and AAD of this position. */
  auth: 'ok' | 'failed'
  plaintext?: Uint8Array
}

/** Everything an offline decoder learns from one captured exportAccount response. */
export interface ExportAnalysis {
  algorithm?: string
  extensions: string[]
  frames: FrameInfo[]
  violations: Violation[]
  car?: {
    root: string
    rev?: string
    records?: number
    /**
     * `ok`: the repo passed the destination's verifier (spec/repo-verification.md) with the DID's
     * key; `not-checked`: it passed without the key (every rule but the commit signature).
     */
    verified: 'ok' | 'failed' | 'not-checked'
    detail?: string
  }
  /** Blob CIDs received in blobpacks (verified), with their sizes. */
  blobs: Map<string, number>
  blobEntries: number
  /** Blob CIDs referenced by the records of the CAR (when it could be read). */
  referencedBlobs: string[]
  missingBlobs: string[]
  preferences?: unknown[]
  accountState?: { fields: string[]; ignoredFields: string[]; email?: string }
  manifest?: EndManifest
}

const utf8 = new TextDecoder('utf-8', { fatal: true })
const TAG = 16

/**
 * Decodes a captured response independently of the destination's stream decoder: frame headers
 * by hand, each frame decrypted with the key, nonce and AAD of its position (so a numbering bug
 * and a bad tag are told apart), then each payload checked by kind. The repo CAR alone is judged
 * by the destination's verifier, which is the repository spec's rules (spec/repo-verification.md)
 * where `@atproto/repo` is laxer or stricter. Collects every violation instead of stopping at the
 * first, so one run names all that is wrong.
 */
export async function analyzeExport(
  capture: ExportCapture,
  options: { signingKey?: string } = {},
): Promise<ExportAnalysis> {
  const out: ExportAnalysis = {
    extensions: [],
    frames: [],
    violations: [],
    blobs: new Map(),
    blobEntries: 0,
    referencedBlobs: [],
    missingBlobs: [],
  }
  const v = (code: ViolationCode, message: string, frame?: number) =>
    out.violations.push(frame === undefined ? { code, message } : { code, frame, message })
  const { status, headers } = capture.response
  if (status !== 200) {
    v('HttpStatus', `HTTP ${status}: ${Buffer.from(capture.body).toString('utf8').slice(0, 300)}`)
    return out
  }
  if (headers['content-type']?.split(';')[0]?.trim() !== 'application/octet-stream') {
    v(
      'ContentTypeHeader',
      `Content-Type is ${JSON.stringify(headers['content-type'])}, not application/octet-stream`,
    )
  }
  const algorithm = headers['atproto-transfer-algorithm']
  out.algorithm = algorithm
  if (algorithm !== capture.request.algorithm) {
    v(
      'AlgorithmHeader',
      `Atproto-Transfer-Algorithm is ${JSON.stringify(algorithm)}, the request asked for ${String(capture.request.algorithm)}`,
    )
  }
  const encText = headers['atproto-transfer-enc'] ?? ''
  const enc = Buffer.from(encText, 'base64url')
  if (!/^[A-Za-z0-9_-]+$/.test(encText) || enc.length !== 32) {
    v(
      'EncHeader',
      `Atproto-Transfer-Enc must be base64url of a 32-byte X25519 enc, got ${JSON.stringify(encText)}`,
    )
  }
  out.extensions = parseExtensionsHeader(headers[EXTENSIONS_HEADER])
  const asked = Array.isArray(capture.request.extensions) ? (capture.request.extensions as string[]) : []
  for (const e of out.extensions) {
    if (!asked.includes(e))
      v('ExtensionsHeader', `the stream applies extension ${e}, which the request did not ask for`)
  }
  if (!capture.bodyComplete)
    v('BodyIncomplete', `the body did not end normally: ${capture.bodyError ?? 'unknown error'}`)

  let keys: FrameKeys | undefined
  const alg = isTransferAlgorithm(String(capture.request.algorithm))
    ? (capture.request.algorithm as 'HPKE-3' | 'HPKE-4')
    : undefined
  if (alg && enc.length === 32) {
    try {
      keys = await setupRecipient({
        algorithm: alg,
        recipientPrivateKey: jwkPrivateKeyBytes(capture.recipientKey),
        enc,
        did: capture.did,
        transferId: capture.transferId,
      })
    } catch (err) {
      v('EncHeader', `HPKE setup failed: ${(err as Error).message}`)
    }
  }

  // Frame headers and AEAD.
  const body = Buffer.from(capture.body)
  let at = 0
  for (let index = 0; at < body.length; index++) {
    if (body.length - at < 8) {
      v('TruncatedHeader', `${body.length - at} bytes after the last frame, not a whole header`, index)
      break
    }
    const frameNumber = body.readUInt32BE(at)
    const typeLength = body.readUInt32BE(at + 4)
    if (typeLength === 0 || typeLength > 256) {
      v('InvalidContentType', `content_type_length ${typeLength} (1 to 256 accepted, D5)`, index)
      break
    }
    if (body.length - at < 12 + typeLength) {
      v('TruncatedHeader', 'the stream ends inside a frame header', index)
      break
    }
    let contentType: string
    try {
      contentType = utf8.decode(body.subarray(at + 8, at + 8 + typeLength))
    } catch {
      v('InvalidContentType', 'content type is not UTF-8', index)
      break
    }
    const ciphertextLength = body.readUInt32BE(at + 8 + typeLength)
    const start = at + 12 + typeLength
    if (ciphertextLength < TAG || body.length < start + ciphertextLength) {
      v(
        'TruncatedFrame',
        `frame ${index} (${contentType}) declares ${ciphertextLength} bytes of ciphertext, ${body.length - start} remain`,
        index,
      )
      break
    }
    if (frameNumber !== index) {
      v(
        'FrameNumbering',
        `frame at position ${index} is numbered ${frameNumber} (frames are numbered from 0, §2.5)`,
        index,
      )
    }
    const frame: FrameInfo = { index, frameNumber, contentType, offset: at, ciphertextLength, auth: 'failed' }
    if (keys) {
      const plaintext = open(keys, index, contentType, body.subarray(start, start + ciphertextLength))
      if (plaintext) {
        frame.auth = 'ok'
        frame.plaintext = plaintext
      } else {
        const sealedAs =
          frameNumber !== index &&
          open(keys, frameNumber, contentType, body.subarray(start, start + ciphertextLength))
        v(
          'FrameAuthFailed',
          `frame ${index} (${contentType}) does not authenticate with the key, nonce and AAD of frame ${index}${sealedAs ? ` (it was sealed as frame ${frameNumber})` : ''}`,
          index,
        )
      }
    }
    out.frames.push(frame)
    at = start + ciphertextLength
  }

  // Order and kinds (§2.1, D12, extensions.md). A resumed export (extension `resume`) may
  // leave out the CAR the destination already verified.
  const resumed = capture.request.resume !== undefined
  let rank = -1
  out.frames.forEach((f, i) => {
    const r = CONTENT_TYPE_ORDER.indexOf(f.contentType)
    if (r < 0) v('UnknownContentType', `frame ${i} has content type ${f.contentType}`, i)
    else if (i === 0 && f.contentType !== CONTENT_TYPE.repoCar && !resumed)
      v('FrameOrder', `the first frame is ${f.contentType}, not the repo CAR`, i)
    else if (r < rank || (r === rank && f.contentType !== CONTENT_TYPE.blobpack)) {
      v('FrameOrder', `frame ${i} (${f.contentType}) comes after ${CONTENT_TYPE_ORDER[rank]}`, i)
    }
    if (f.contentType === CONTENT_TYPE.endManifest && !out.extensions.includes('end-manifest')) {
      v('ExtensionsHeader', `frame ${i} is an end manifest, which was not negotiated`, i)
    }
    rank = Math.max(rank, r)
  })
  if (!resumed && out.frames.length > 0 && !out.frames.some((f) => f.contentType === CONTENT_TYPE.repoCar)) {
    v('FrameOrder', 'the stream has no repo CAR frame')
  }

  // Payloads, only of frames that authenticated.
  let plaintextBytes = 0
  for (const f of out.frames) {
    if (f.auth !== 'ok' || !f.plaintext) continue
    if (f.contentType !== CONTENT_TYPE.endManifest) plaintextBytes += f.plaintext.length
    const bytes = f.plaintext
    if (f.contentType === CONTENT_TYPE.repoCar) {
      if (out.car) continue
      await analyzeCar(out, bytes, capture.did, options.signingKey ?? capture.signingKey, f.index)
    } else if (f.contentType === CONTENT_TYPE.blobpack) {
      // Held per frame and counted only once the whole pack reads: a refused pack's blobs
      // (even the entries before the bad one) are not received, as a destination discards them.
      const received = new Map<string, number>()
      try {
        const summary = await readBlobpack(once(bytes), {
          onBlob: ({ cid, size }) => ({
            write: () => {},
            end: () => void received.set(cid.toString(), size),
            abort: () => {},
          }),
        })
        for (const [cid, size] of received) out.blobs.set(cid, size)
        out.blobEntries += summary.entries
      } catch (err) {
        v(
          'BlobpackInvalid',
          `frame ${f.index}: ${err instanceof WireError ? `${err.reason}: ` : ''}${(err as Error).message}`,
          f.index,
        )
      }
    } else if (f.contentType === CONTENT_TYPE.preferences) {
      try {
        out.preferences = parsePreferences(bytes)
      } catch (err) {
        v('PreferencesInvalid', `frame ${f.index}: ${(err as Error).message}`, f.index)
      }
    } else if (f.contentType === CONTENT_TYPE.accountState) {
      try {
        const { state, ignoredFields } = decodeAccountState(bytes)
        out.accountState = {
          fields: Object.keys(state),
          ignoredFields,
          ...(typeof state.email === 'string' && { email: state.email }),
        }
      } catch (err) {
        v('AccountStateInvalid', `frame ${f.index}: ${(err as Error).message}`, f.index)
      }
    } else if (f.contentType === CONTENT_TYPE.endManifest) {
      try {
        out.manifest = decodeEndManifest(bytes)
      } catch (err) {
        v('EndManifestInvalid', `frame ${f.index}: ${(err as Error).message}`, f.index)
      }
    }
  }

  const deferred = new Set(out.manifest?.deferredBlobs ?? [])
  out.missingBlobs = out.referencedBlobs.filter((c) => !out.blobs.has(c) && !deferred.has(c))
  if (out.missingBlobs.length > 0) {
    v(
      'BlobMissing',
      `${out.missingBlobs.length} of ${out.referencedBlobs.length} referenced blobs are not in any blobpack (nor deferred): ${out.missingBlobs.slice(0, 5).join(', ')}${out.missingBlobs.length > 5 ? ', ...' : ''}`,
    )
  }
  if (out.manifest) {
    const m = out.manifest
    const before = out.frames.filter((f) => f.contentType !== CONTENT_TYPE.endManifest).length
    const problems: string[] = []
    if (m.frames !== before) problems.push(`frames ${m.frames}, received ${before}`)
    if (m.bytes !== plaintextBytes) problems.push(`bytes ${m.bytes}, received ${plaintextBytes}`)
    if (m.blobs !== out.blobs.size) problems.push(`blobs ${m.blobs}, received ${out.blobs.size}`)
    if (out.car && m.repoCommit !== out.car.root)
      problems.push(`repoCommit ${m.repoCommit}, CAR root ${out.car.root}`)
    if (out.car?.rev && m.repoRev !== out.car.rev)
      problems.push(`repoRev ${m.repoRev}, commit rev ${out.car.rev}`)
    if (problems.length)
      v('EndManifestInvalid', `the end manifest disagrees with the stream: ${problems.join('; ')}`)
  } else if (out.extensions.includes('end-manifest') && capture.bodyComplete) {
    v('EndManifestInvalid', 'end-manifest was confirmed but the stream has no manifest frame')
  }
  return out
}

function open(keys: FrameKeys, n: number, contentType: string, sealed: Uint8Array): Uint8Array | undefined {
  const decipher = createFrameDecipher(keys.algorithm, keys.key(n), keys.nonce(n))
  decipher.setAAD(frameAad(keys.did, keys.transferId, n, contentType))
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG))
  try {
    return Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - TAG)), decipher.final()])
  } catch {
    return undefined
  }
}

async function analyzeCar(
  out: ExportAnalysis,
  bytes: Uint8Array,
  did: string,
  signingKey: string | undefined,
  index: number,
): Promise<void> {
  const staging = new MemoryStaging()
  let root: CarRoot | undefined
  try {
    for await (const batch of verifiedCarBatches(once(bytes), { onRoot: (r) => (root = r) }))
      await staging.put(batch)
  } catch (err) {
    if (root) out.car = { root: root.toString(), verified: 'failed', detail: (err as Error).message }
    out.violations.push({
      code: 'RepoInvalid',
      frame: index,
      message: `not a valid repo CAR: ${(err as Error).message}`,
    })
    return
  }
  if (!root) throw new Error('the CAR reader yielded no root')
  out.car = { root: root.toString(), verified: 'not-checked' }
  try {
    // The destination's own verifier (spec/repo-verification.md): what a source is judged by is
    // exactly what a destination will refuse. Without the DID's key, the commit is re-signed with
    // a throwaway key so that every rule but the signature is still checked.
    const key = signingKey ? { did: signingKey } : await resign(staging, root)
    const repo = await verifyStagedRepo({ staging, root: key.root ?? root, did, signingKey: key.did })
    out.car.rev = repo.rev
    out.car.records = repo.records
    out.referencedBlobs = [...repo.blobCids]
    if (signingKey) out.car.verified = 'ok'
    else out.car.detail = 'the DID signing key is unknown: commit signature not checked'
  } catch (err) {
    out.car.verified = 'failed'
    out.car.detail = (err as Error).message
    out.violations.push({
      code: 'RepoInvalid',
      frame: index,
      message: `the CAR does not verify for ${did}: ${(err as Error).message}`,
    })
  }
}

type CarRoot = Parameters<typeof verifyStagedRepo>[0]['root']

let throwaway: Promise<Secp256k1Keypair> | undefined

/**
 * A copy of the commit with only its `sig` replaced, signed by a throwaway key and staged under
 * its own CID. A commit that is not a DRISL map with a byte `sig` is left alone: the verifier
 * refuses it before it gets to the signature, so the key does not matter.
 */
async function resign(staging: MemoryStaging, root: CarRoot): Promise<{ did: string; root?: CarRoot }> {
  throwaway ??= Secp256k1Keypair.create()
  const key = await throwaway
  const original = await staging.get(root.bytes)
  let commit: unknown
  try {
    commit = original && cborDecode(original)
  } catch {
    return { did: key.did() }
  }
  if (!original || !isPlainObject(commit) || !(commit.sig instanceof Uint8Array)) return { did: key.did() }
  // A non-canonical commit must reach the verifier as sent, so it can say so.
  if (!Buffer.from(cborEncode(commit as LexValue)).equals(original)) return { did: key.did() }
  const { sig: _sig, ...unsigned } = commit
  const resigned = cborEncode({
    ...unsigned,
    sig: await key.sign(cborEncode(unsigned as LexValue)),
  } as LexValue)
  const cid = await cidForCbor(resigned)
  await staging.put([{ cid: cid.bytes, bytes: resigned }])
  return { did: key.did(), root: cid }
}

async function* once(bytes: Uint8Array) {
  yield bytes
}
