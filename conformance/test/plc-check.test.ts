import { Secp256k1Keypair } from '@atproto/crypto'
import * as plc from '@did-plc/lib'
import { checkPlcMove, PlcOperationError } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'

/**
 * What the destination accepts from completeTransfer before it submits the operation (D8):
 * a hostile or buggy source must not be able to drop or demote the user's keys, point the
 * account elsewhere, or hand over an operation PLC would reject.
 */
describe('checkPlcMove against hostile completeTransfer answers', () => {
  let directory: PlcDirectory
  let client: plc.Client
  let did: string
  let recovery: Secp256k1Keypair
  let sourceKey: Secp256k1Keypair
  let user: string
  let ours: string
  const DEST = 'https://dest.example'
  let newSigningKey: string

  beforeAll(async () => {
    directory = await startPlcDirectory()
    client = new plc.Client(directory.url)
    recovery = await Secp256k1Keypair.create()
    sourceKey = await Secp256k1Keypair.create()
    user = (await Secp256k1Keypair.create()).did()
    ours = (await Secp256k1Keypair.create()).did()
    newSigningKey = (await Secp256k1Keypair.create()).did()
    did = await client.createDid({
      signingKey: (await Secp256k1Keypair.create()).did(),
      handle: 'hostile.test',
      pds: 'https://source.example',
      rotationKeys: [recovery.did(), sourceKey.did()],
      signer: sourceKey,
    })
  })
  afterAll(() => directory?.close())

  /** The operation a source would return, signed by `signer`, with `edit` applied. */
  async function answer(
    rotationKeys: string[],
    options: { signer?: Secp256k1Keypair; endpoint?: string; signingKey?: string } = {},
  ) {
    const last = await client.getLastOp(did)
    if (last.type === 'plc_tombstone') throw new Error('tombstoned')
    return plc.createUpdateOp(last, options.signer ?? sourceKey, (doc) => ({
      ...doc,
      rotationKeys,
      verificationMethods: { ...doc.verificationMethods, atproto: options.signingKey ?? newSigningKey },
      services: {
        ...doc.services,
        atproto_pds: { type: 'AtprotoPersonalDataServer', endpoint: options.endpoint ?? DEST },
      },
    }))
  }
  /** What the destination checks, having asked for `requested` (its own key last). */
  const expected = (
    firstRotationKey?: string,
    requested = [...(firstRotationKey ? [firstRotationKey] : []), recovery.did(), sourceKey.did(), ours],
  ) => ({
    did,
    pdsEndpoint: DEST,
    signingKey: newSigningKey,
    rotationKey: ours,
    requestedRotationKeys: requested,
    ...(firstRotationKey && { firstRotationKey }),
  })

  it('accepts the honest move, with and without a key of the user first', async () => {
    await expect(
      checkPlcMove(client, await answer([recovery.did(), ours]), expected()),
    ).resolves.toBeDefined()
    await expect(
      checkPlcMove(client, await answer([user, recovery.did(), ours]), expected(user)),
    ).resolves.toBeDefined()
  })

  it("refuses an operation that leaves out or demotes the user's new key", async () => {
    await expect(checkPlcMove(client, await answer([recovery.did(), ours]), expected(user))).rejects.toThrow(
      /does not put your key/,
    )
    await expect(
      checkPlcMove(client, await answer([recovery.did(), user, ours]), expected(user)),
    ).rejects.toThrow(PlcOperationError)
  })

  it("refuses an operation that drops or reorders the account's own rotation keys", async () => {
    await expect(checkPlcMove(client, await answer([ours]), expected())).rejects.toThrow(/drops or reorders/)
    // The user's key demoted below ours: every key is there, in an order we did not ask for.
    await expect(checkPlcMove(client, await answer([ours, recovery.did()]), expected())).rejects.toThrow(
      /not the ones asked for/,
    )
    // A literal source that keeps its own key (it signs what it is given) is acceptable.
    await expect(
      checkPlcMove(client, await answer([recovery.did(), sourceKey.did(), ours]), expected()),
    ).resolves.toBeDefined()
    // A key nobody asked for, slipped in.
    const extra = (await Secp256k1Keypair.create()).did()
    await expect(
      checkPlcMove(client, await answer([recovery.did(), ours, extra]), expected()),
    ).rejects.toThrow(/not the ones asked for/)
    await expect(checkPlcMove(client, await answer([recovery.did()]), expected())).rejects.toThrow(
      /does not include our rotation key/,
    )
  })

  it('refuses an operation that points elsewhere or is not signed by a rotation key', async () => {
    await expect(
      checkPlcMove(
        client,
        await answer([recovery.did(), ours], { endpoint: 'https://evil.example' }),
        expected(),
      ),
    ).rejects.toThrow(/points the PDS at https:\/\/evil.example/)
    await expect(
      checkPlcMove(client, await answer([recovery.did(), ours], { signingKey: user }), expected()),
    ).rejects.toThrow(/signing key/)
    const stranger = await Secp256k1Keypair.create()
    await expect(
      checkPlcMove(client, await answer([recovery.did(), ours], { signer: stranger }), expected()),
    ).rejects.toThrow(PlcOperationError)
    await expect(checkPlcMove(client, { not: 'an operation' }, expected())).rejects.toThrow(
      /not a PLC operation/,
    )
  })
})
