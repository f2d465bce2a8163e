import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import type { TransferAlgorithm } from '../src/algorithms.ts'
import { WireError } from '../src/errors.ts'
import { hpkeSuite, setupRecipient, setupSender } from '../src/key-schedule.ts'
import { DID, TRANSFER_ID, x25519Pair } from './helpers.ts'

interface RfcVector {
  name: string
  aead_id: number
  info: string
  ikmE: string
  ikmR: string
  pkRm: string
  skRm: string
  enc: string
  encryptions: { seq: number; pt: string; aad: string; ct: string }[]
  exports: { exporter_context: string; L: number; exported_value: string }[]
}

const rfc: { vectors: RfcVector[] } = JSON.parse(
  readFileSync(new URL('../../../conformance/vectors/rfc9180-base.json', import.meta.url), 'utf8'),
)
const hex = (s: string) => Uint8Array.from(Buffer.from(s, 'hex'))
const toHex = (b: ArrayBuffer | Uint8Array) =>
  Buffer.from(b instanceof Uint8Array ? b : new Uint8Array(b)).toString('hex')
const suiteOf = (aeadId: number): TransferAlgorithm => (aeadId === 1 ? 'HPKE-3' : 'HPKE-4')

// The RFC vectors exercise hpke-js through the same suite objects our key schedule uses,
// the way hpke-js itself runs them: derive keys from ikm, fix the ephemeral key, compare.
describe.each(rfc.vectors)('RFC 9180 $name', (v) => {
  const suite = hpkeSuite(suiteOf(v.aead_id))

  it('derives pkR, enc, ciphertexts and exports', async () => {
    const recipient = await suite.kem.deriveKeyPair(hex(v.ikmR))
    expect(toHex(await suite.kem.serializePublicKey(recipient.publicKey))).toBe(v.pkRm)
    expect(toHex(await suite.kem.serializePrivateKey(recipient.privateKey))).toBe(v.skRm)
    const sender = await suite.createSenderContext({
      recipientPublicKey: recipient.publicKey,
      info: hex(v.info),
      ekm: await suite.kem.deriveKeyPair(hex(v.ikmE)),
    })
    expect(toHex(sender.enc)).toBe(v.enc)
    const first = v.encryptions.find((e) => e.seq === 0)!
    expect(toHex(await sender.seal(hex(first.pt), hex(first.aad)))).toBe(first.ct)
    const receiver = await suite.createRecipientContext({
      recipientKey: recipient,
      enc: hex(v.enc),
      info: hex(v.info),
    })
    for (const e of v.exports) {
      expect(toHex(await receiver.export(hex(e.exporter_context), e.L))).toBe(e.exported_value)
    }
  })
})

describe('transfer key schedule', () => {
  it('gives sender and recipient the same transfer secret and frame keys', async () => {
    for (const algorithm of ['HPKE-3', 'HPKE-4'] as const) {
      const pair = x25519Pair()
      const { enc, keys } = await setupSender({
        algorithm,
        recipientPublicKey: pair.publicKey,
        did: DID,
        transferId: TRANSFER_ID,
      })
      const r = await setupRecipient({
        algorithm,
        recipientPrivateKey: pair.privateKey,
        enc,
        did: DID,
        transferId: TRANSFER_ID,
      })
      expect(r.transferSecret).toEqual(keys.transferSecret)
      expect(r.key(7)).toEqual(keys.key(7))
      expect(keys.key(0)).toHaveLength(algorithm === 'HPKE-3' ? 16 : 32)
      expect(keys.nonce(0)).toHaveLength(12)
      expect(keys.key(0)).not.toEqual(keys.key(1))
      expect(keys.nonce(0)).not.toEqual(keys.nonce(1))
    }
  })

  it('transfer secret depends on the suite, the did and the transferId', async () => {
    const pair = x25519Pair()
    const ikmE = new Uint8Array(32).fill(7)
    const secret = async (algorithm: TransferAlgorithm, did = DID, transferId = TRANSFER_ID) =>
      (await setupSender({ algorithm, recipientPublicKey: pair.publicKey, did, transferId, ikmE })).keys
        .transferSecret
    const base = await secret('HPKE-3')
    expect(await secret('HPKE-3')).toEqual(base)
    expect(await secret('HPKE-4')).not.toEqual(base)
    expect(await secret('HPKE-3', 'did:plc:abc124')).not.toEqual(base)
    expect(await secret('HPKE-3', DID, '019537a1-7e28-7def-8c56-3a8b69e2d472')).not.toEqual(base)
  })

  it('rejects keys and encs of the wrong size', async () => {
    const pair = x25519Pair()
    await expect(
      setupSender({
        algorithm: 'HPKE-3',
        recipientPublicKey: new Uint8Array(31),
        did: DID,
        transferId: TRANSFER_ID,
      }),
    ).rejects.toBeInstanceOf(WireError)
    await expect(
      setupRecipient({
        algorithm: 'HPKE-3',
        recipientPrivateKey: pair.privateKey,
        enc: new Uint8Array(33),
        did: DID,
        transferId: TRANSFER_ID,
      }),
    ).rejects.toMatchObject({ reason: 'InvalidKey' })
  })
})
