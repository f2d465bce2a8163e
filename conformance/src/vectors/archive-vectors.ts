/**
 * Vectors of the archive format (spec/archive-format.md): sealed objects (the transfer key
 * schedule and frames with the archive's header and session id) and a signed manifest, from
 * fixed inputs, so another implementation can read our archives and write ones we read.
 */
import { createHash } from 'node:crypto'
import { P256Keypair } from '@atproto/crypto'
import {
  AccountArchive,
  type ArchiveKeys,
  type BackupManifest,
  decodeManifest,
  encodeManifest,
  MANIFEST_VERSION,
  openObject,
  sealObject,
} from '@pds-transfer/archive'
import { hpkeSuite, type TransferAlgorithm } from '@pds-transfer/core'
import { VECTOR_DID, VECTOR_IKM_E, VECTOR_IKM_R } from './transfer-vectors.ts'

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
const fromHex = (s: string) => Uint8Array.from(Buffer.from(s, 'hex'))

/** A fixed P-256 manifest-signing key (vectors only). */
const SIGNING_KEY_HEX = '6f1d2b9e83c4a5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e'

export interface SealedObjectVector {
  name: string
  algorithm: TransferAlgorithm
  did: string
  key: string
  contentType: string
  compression: 'none' | 'zstd'
  ikmE: string
  plaintext: string
  sealed: string
}

export interface ArchiveVectors {
  keys: { ikmR: string; skR: string; pkR: string; signingPrivateKey: string; signingDid: string }
  objects: SealedObjectVector[]
  manifest: { key: string; encoded: string; sha256: string; fields: Record<string, unknown> }
}

export const ARCHIVE_DOC = {
  description:
    'Vectors of the pds-transfer archive format (spec/archive-format.md): sealed objects and a signed backup manifest from fixed inputs. A reader must open every `sealed` with skR to `plaintext`; a writer must reproduce `sealed` of the uncompressed objects byte for byte from ikmE (zstd output depends on the compressor, so for the zstd object check only the opening).',
  fields: {
    'keys.skR / pkR': 'archive encryption key: DeriveKeyPair(ikmR) of DHKEM(X25519, HKDF-SHA256), raw',
    'keys.signingPrivateKey / signingDid': 'P-256 manifest-signing key (raw scalar) and its did:key',
    'objects[].sealed':
      'header "ATAR" 0x01 suite(3|4) compression(0|1) 0x00 || enc || frames of contentType (<= 1 MiB plaintext each) || one frame "application/vnd.atproto.archive.end+cbor" carrying DAG-CBOR {size, sha256} of the plaintext',
    'objects[] session':
      'the key schedule of transfer-vectors.json with did = the account, transferId = "archive:" hex(header) ":" key',
    'manifest.encoded':
      'DAG-CBOR of the manifest; sig = ECDSA P-256 (low-S) over the DAG-CBOR of every other field',
    'manifest.sha256': "SHA-256 of encoded: the next manifest's prev",
  },
}

async function vectorKeys(algorithm: TransferAlgorithm) {
  const suite = hpkeSuite(algorithm)
  const pair = await suite.kem.deriveKeyPair(VECTOR_IKM_R)
  const pkR = new Uint8Array(await suite.kem.serializePublicKey(pair.publicKey))
  const skR = new Uint8Array(await suite.kem.serializePrivateKey(pair.privateKey))
  const signer = await P256Keypair.import(SIGNING_KEY_HEX)
  const keys: ArchiveKeys = {
    encryption: {
      kty: 'OKP',
      crv: 'X25519',
      x: Buffer.from(pkR).toString('base64url'),
      d: Buffer.from(skR).toString('base64url'),
      kid: 'archive-vector',
      alg: algorithm,
      use: 'enc',
    },
    signing: { did: signer.did(), privateKey: SIGNING_KEY_HEX },
  }
  return { keys, pkR, skR, signer }
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = []
  for await (const chunk of source) parts.push(Uint8Array.from(chunk))
  return Buffer.concat(parts)
}

/** Every archive vector, computed from the implementation. */
export async function buildArchiveVectors(): Promise<ArchiveVectors> {
  const { keys, pkR, skR, signer } = await vectorKeys('HPKE-3')
  const car = Uint8Array.from({ length: 2000 }, (_, i) => (i % 40) + 0x30)
  const cases = [
    {
      name: 'HPKE-3 blob, uncompressed',
      algorithm: 'HPKE-3',
      key: `${VECTOR_DID}/blobs/bafkreiaiafme3nwx3khapwowzw3fdllwdgijrzgzacydg5i7qrqk4hdqvu`,
      contentType: 'application/octet-stream',
      compress: false,
      plaintext: new TextEncoder().encode('hello, atproto'),
    },
    {
      name: 'HPKE-4 preferences, uncompressed',
      algorithm: 'HPKE-4',
      key: `${VECTOR_DID}/preferences/000000000000.json`,
      contentType: 'application/json',
      compress: false,
      plaintext: new TextEncoder().encode('{"preferences":[]}'),
    },
    {
      name: 'HPKE-3 repo CAR, zstd',
      algorithm: 'HPKE-3',
      key: `${VECTOR_DID}/repo/3l2b2nkxqti2k.car`,
      contentType: 'application/vnd.ipld.car',
      compress: true,
      plaintext: car,
    },
  ] as const
  const objects: SealedObjectVector[] = []
  for (const c of cases) {
    const k = c.algorithm === keys.encryption.alg ? keys : (await vectorKeys(c.algorithm)).keys
    const sealed = await collect(
      sealObject(
        k,
        { did: VECTOR_DID, key: c.key, contentType: c.contentType, compress: c.compress, ikmE: VECTOR_IKM_E },
        [c.plaintext],
      ),
    )
    objects.push({
      name: c.name,
      algorithm: c.algorithm,
      did: VECTOR_DID,
      key: c.key,
      contentType: c.contentType,
      compression: c.compress ? 'zstd' : 'none',
      ikmE: hex(VECTOR_IKM_E),
      plaintext: hex(c.plaintext),
      sealed: hex(sealed),
    })
  }
  const object = (i: number) => ({
    key: cases[i]!.key,
    size: fromHex(objects[i]!.sealed).length,
    sha256: sha256(fromHex(objects[i]!.sealed)),
    plainSize: cases[i]!.plaintext.length,
  })
  const { bytes } = await encodeManifest(
    {
      version: MANIFEST_VERSION,
      did: VECTOR_DID,
      seq: 0,
      prev: null,
      createdAt: '2026-12-03T00:00:00.000Z',
      source: 'https://pds.example.com',
      repo: {
        rev: '3l2b2nkxqti2k',
        commitCid: 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm',
        records: 1,
        signingKey: 'did:key:zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF',
        kind: 'full',
        since: null,
        object: object(2),
      },
      blobs: [{ cid: 'bafkreiaiafme3nwx3khapwowzw3fdllwdgijrzgzacydg5i7qrqk4hdqvu', object: object(0) }],
      blobCount: 1,
      missingBlobs: [],
      preferences: object(1),
      accountState: null,
    },
    signer,
  )
  return {
    keys: {
      ikmR: hex(VECTOR_IKM_R),
      skR: hex(skR),
      pkR: hex(pkR),
      signingPrivateKey: SIGNING_KEY_HEX,
      signingDid: signer.did(),
    },
    objects,
    manifest: {
      key: AccountArchive.manifestKey(VECTOR_DID, 0),
      encoded: hex(bytes),
      sha256: sha256(bytes),
      fields: { seq: 0, prev: null, blobs: 1 },
    },
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

/**
 * Checks the committed vectors: each sealed object opens to its plaintext, each uncompressed one
 * is resealed byte for byte, the manifest's signature verifies with the vector key. Returns one
 * failure text per vector (undefined when it passes).
 */
export async function checkArchiveVectors(v: ArchiveVectors): Promise<{ name: string; failure?: string }[]> {
  const out: { name: string; failure?: string }[] = []
  for (const o of v.objects) {
    const { keys } = await vectorKeys(o.algorithm)
    const address = { did: o.did, key: o.key, contentType: o.contentType }
    let failure: string | undefined
    try {
      const opened = await collect(openObject(keys, address, [fromHex(o.sealed)]))
      if (hex(opened) !== o.plaintext) failure = 'opens to other bytes'
      if (!failure && o.compression === 'none') {
        const resealed = await collect(
          sealObject(keys, { ...address, compress: false, ikmE: fromHex(o.ikmE) }, [fromHex(o.plaintext)]),
        )
        if (hex(resealed) !== o.sealed) failure = 'sealing the plaintext gives other bytes'
      }
    } catch (err) {
      failure = (err as Error).message
    }
    out.push({ name: `object: ${o.name}`, ...(failure && { failure }) })
  }
  try {
    const manifest: BackupManifest = await decodeManifest(
      fromHex(v.manifest.encoded),
      v.manifest.key,
      v.keys.signingDid,
    )
    const failure =
      sha256(fromHex(v.manifest.encoded)) !== v.manifest.sha256 || manifest.seq !== 0
        ? 'sha256 or fields differ'
        : undefined
    out.push({ name: 'manifest: signed, seq 0', ...(failure && { failure }) })
  } catch (err) {
    out.push({ name: 'manifest: signed, seq 0', failure: (err as Error).message })
  }
  return out
}
