import { P256Keypair, Secp256k1Keypair } from '@atproto/crypto'
import * as plc from '@did-plc/lib'
import { beforeEach, describe, expect, it } from 'vitest'
import { putRotationKeyFirst } from '../src/add-rotation-key.ts'
import type { PdsCall } from '../src/pds-call.ts'

/**
 * The check the CLI (`pds-identity add-key`) and the web page (/keys) share: what the PDS signs
 * is submitted only when it continues the newest operation and changes nothing but putting the
 * user's key first. A PDS stands in as a function that signs with its own key, honestly or not.
 */
describe('putRotationKeyFirst: only the change asked for is submitted', () => {
  let pdsKey: Secp256k1Keypair
  let userKey: string
  let genesis: plc.Operation
  let did: string
  let log: plc.ExportedOp[]
  let calls: string[]
  const directory = {
    getAuditableLog: async () => log,
    getDocumentData: async () => {
      const last = log.at(-1)?.operation as plc.Operation
      return { did, ...plc.normalizeOp(last) } as unknown as plc.DocumentData
    },
  }
  const entry = async (operation: plc.Operation): Promise<plc.ExportedOp> => ({
    did,
    operation,
    // PLC names an operation by its CID, which an update over it carries as `prev`.
    cid: (await plc.createUpdateOp(operation, pdsKey, (op) => op)).prev as string,
    nullified: false,
    createdAt: new Date().toISOString(),
  })

  /** A PDS that signs the asked-for keys on top of `prev`, then lets `tamper` change the operation. */
  const pds =
    (tamper: (op: plc.UnsignedOperation) => plc.UnsignedOperation = (op) => op, prev = () => log.at(-1)) =>
    async (): Promise<PdsCall> =>
    async (nsid, body) => {
      calls.push(nsid)
      if (nsid === 'com.atproto.identity.signPlcOperation') {
        const { rotationKeys } = body as { rotationKeys: string[] }
        const base = prev()?.operation as plc.Operation
        const operation = await plc.createUpdateOp(base, pdsKey, (op) => tamper({ ...op, rotationKeys }))
        return { operation }
      }
      if (nsid === 'com.atproto.identity.submitPlcOperation') {
        log.push(await entry((body as { operation: plc.Operation }).operation))
        return {}
      }
      throw new Error(`unexpected call ${nsid}`)
    }

  beforeEach(async () => {
    pdsKey = await Secp256k1Keypair.create()
    userKey = (await P256Keypair.create()).did()
    const created = await plc.createOp({
      signingKey: (await Secp256k1Keypair.create()).did(),
      handle: 'alice.test',
      pds: 'https://pds.example.com',
      rotationKeys: [pdsKey.did()],
      signer: pdsKey,
    })
    genesis = created.op
    did = created.did
    log = [await entry(genesis)]
    calls = []
  })

  it('submits an honest operation: the key first, everything else as it was', async () => {
    const done = await putRotationKeyFirst({
      did,
      userKey,
      code: 'AAAAA-BBBBB',
      plc: directory,
      connect: pds(),
    })
    expect(done).toEqual({ rotationKeys: [userKey, pdsKey.did()], changed: true })
    expect(calls).toEqual([
      'com.atproto.identity.signPlcOperation',
      'com.atproto.identity.submitPlcOperation',
    ])
  })

  it.each([
    [
      'points the identity at another server',
      (op: plc.UnsignedOperation) => ({
        ...op,
        services: {
          atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: 'https://elsewhere.example.com' },
        },
      }),
    ],
    [
      'replaces the signing key',
      (op: plc.UnsignedOperation) => ({
        ...op,
        verificationMethods: { atproto: pdsKey.did() },
      }),
    ],
    ['changes the handle', (op: plc.UnsignedOperation) => ({ ...op, alsoKnownAs: ['at://mallory.test'] })],
    [
      'adds a key of its own too',
      (op: plc.UnsignedOperation) => ({
        ...op,
        rotationKeys: [...op.rotationKeys, 'did:key:zQ3shP2mWsZYWgvgM11nenXRTx9L1yiJKmkf9dfX7NaMKb1pX'],
      }),
    ],
    [
      'puts the key second',
      (op: plc.UnsignedOperation) => ({ ...op, rotationKeys: [...op.rotationKeys].reverse() }),
    ],
  ])('refuses an operation that %s, and submits nothing', async (_what, tamper) => {
    const before = [...log]
    await expect(
      putRotationKeyFirst({ did, userKey, code: 'AAAAA-BBBBB', plc: directory, connect: pds(tamper) }),
    ).rejects.toMatchObject({ reason: 'UnexpectedOperation' })
    expect(calls).toEqual(['com.atproto.identity.signPlcOperation'])
    expect(log).toEqual(before)
  })

  it('refuses an operation on top of an older one (a fork that could undo recent changes)', async () => {
    const first = log[0]
    const moved = await plc.createUpdateOp(genesis, pdsKey, (op) => ({
      ...op,
      alsoKnownAs: ['at://alice2.test'],
    }))
    log.push(await entry(moved))
    // Signed over the genesis, with what the newest operation says: only `prev` gives it away.
    const stale = pds(
      (op) => ({ ...op, alsoKnownAs: ['at://alice2.test'] }),
      () => first,
    )
    await expect(
      putRotationKeyFirst({ did, userKey, code: 'AAAAA-BBBBB', plc: directory, connect: stale }),
    ).rejects.toMatchObject({ reason: 'UnexpectedOperation' })
    expect(calls).toEqual(['com.atproto.identity.signPlcOperation'])
  })

  it("refuses a sixth key before asking the PDS (PLC's limit)", async () => {
    const others = await Promise.all([1, 2, 3, 4].map(async () => (await P256Keypair.create()).did()))
    log.push(
      await entry(
        await plc.createUpdateOp(genesis, pdsKey, (op) => ({
          ...op,
          rotationKeys: [...op.rotationKeys, ...others],
        })),
      ),
    )
    await expect(
      putRotationKeyFirst({ did, userKey, code: 'AAAAA-BBBBB', plc: directory, connect: pds() }),
    ).rejects.toMatchObject({ reason: 'KeyLimit' })
    expect(calls).toEqual([])
  })

  it('does nothing for a key already first', async () => {
    await putRotationKeyFirst({ did, userKey, code: 'AAAAA-BBBBB', plc: directory, connect: pds() })
    calls = []
    const again = await putRotationKeyFirst({
      did,
      userKey,
      code: 'CCCCC-DDDDD',
      plc: directory,
      connect: pds(),
    })
    expect(again).toEqual({ rotationKeys: [userKey, pdsKey.did()], changed: false })
    expect(calls).toEqual([])
  })
})
