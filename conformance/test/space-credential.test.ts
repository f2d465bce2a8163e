import { Secp256k1Keypair } from '@atproto/crypto'
import { mintSpaceCredential, verifySpaceCredential, verifySpaceRepoCar } from '@pds-transfer/core'
import { importPermissionedUnit, readPermissionedData } from '@pds-transfer/destination'
import { afterEach, describe, expect, it } from 'vitest'
import { seedSpaceAccount } from '../src/fixtures/space-account.ts'
import { type SpaceHostServer, startSpaceHostServer } from '../src/harness/space-host-server.ts'
import { SpaceSyncer } from '../src/harness/space-syncer.ts'
import { SqliteAccountSink } from '../src/store/sqlite-account-sink.ts'

/**
 * Space credentials (0016, "Access control"): a syncer, not the account, reads a permissioned repo
 * with a credential its authority signed, bound to the syncer's key by DPoP; and after the
 * authority's account moved, reads it from the new host with a credential the new key signed.
 */
const BOB = 'did:plc:bobbobbobbobbobbobbobbobb'
let servers: SpaceHostServer[] = []
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()))
  servers = []
})

async function server(authorityKeys: Map<string, string>) {
  const s = await startSpaceHostServer({ authorityKeys })
  servers.push(s)
  return s
}

function getRepoUrl(host: SpaceHostServer, space: string, repo: string): string {
  return `${host.url}/xrpc/com.atproto.space.getRepo?${new URLSearchParams({ space, repo })}`
}

describe('space credentials', () => {
  it('mint and verify: the authority key, the space, the expiry; an OAuth token is not one', async () => {
    const key = await Secp256k1Keypair.create()
    const authority = 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa'
    const space = `at://${authority}/space/com.example.forum/x`
    const credential = await mintSpaceCredential({ space, jkt: 'j', signer: key })
    const resolve = async () => key.did()
    expect(await verifySpaceCredential(credential, resolve)).toMatchObject({ authority, space, jkt: 'j' })
    const other = await Secp256k1Keypair.create()
    await expect(verifySpaceCredential(credential, async () => other.did())).rejects.toThrow(/signature/)
    await expect(verifySpaceCredential(credential, resolve, Date.now() + 7201_000)).rejects.toThrow(/expired/)
    expect(await verifySpaceCredential('abc.def.ghi', resolve)).toBeUndefined()
  })

  it("a syncer reads any member's repo in the space with a credential of its authority", async () => {
    const bobKey = await Secp256k1Keypair.create()
    const keys = new Map([[BOB, bobKey.did()]])
    const host = await server(keys)
    const alice = await seedSpaceAccount(host)
    keys.set(alice.did, alice.key.did())
    const syncer = new SpaceSyncer()
    // bob is the authority of alice's first joined space: his key signs the credential.
    const credential = await mintSpaceCredential({ space: alice.joined[0], jkt: syncer.jkt, signer: bobKey })
    const res = await syncer.get(getRepoUrl(host, alice.joined[0], alice.did), credential)
    expect(res.status).toBe(200)
    const repo = await verifySpaceRepoCar(new Uint8Array(await res.arrayBuffer()), {
      space: alice.joined[0],
      author: alice.did,
      didKey: alice.key.did(),
    })
    expect(repo.records).toHaveLength(1)
  })

  it('refuses a replayed proof, a proof for another host, another space, another key, or no proof', async () => {
    const bobKey = await Secp256k1Keypair.create()
    const keys = new Map([[BOB, bobKey.did()]])
    const host = await server(keys)
    const alice = await seedSpaceAccount(host)
    const syncer = new SpaceSyncer()
    const credential = await mintSpaceCredential({ space: alice.joined[0], jkt: syncer.jkt, signer: bobKey })
    const url = getRepoUrl(host, alice.joined[0], alice.did)
    const proof = await syncer.proof('GET', url.split('?')[0] as string, credential)
    expect((await syncer.get(url, credential, { proof })).status).toBe(200)
    const expectRefused = async (res: Response, status: number, why: RegExp) => {
      expect(res.status).toBe(status)
      expect(await res.json()).toMatchObject({ message: expect.stringMatching(why) })
    }
    await expectRefused(await syncer.get(url, credential, { proof }), 401, /used before/)
    await expectRefused(
      await syncer.get(url, credential, { htu: 'http://other.example/xrpc/x' }),
      401,
      /htm, htu/,
    )
    const elsewhere = getRepoUrl(host, alice.joined[1], alice.did)
    await expectRefused(await syncer.get(elsewhere, credential), 403, /for at:\/\//)
    const another = await mintSpaceCredential({ space: alice.joined[0], jkt: syncer.jkt, signer: bobKey })
    const proofForAnother = await syncer.proof('GET', url.split('?')[0] as string, another)
    await expectRefused(await syncer.get(url, credential, { proof: proofForAnother }), 401, /ath/)
    const thief = new SpaceSyncer()
    await expectRefused(await thief.get(url, credential), 401, /not the one the credential is bound to/)
    const forged = await mintSpaceCredential({
      space: alice.joined[0],
      jkt: syncer.jkt,
      signer: await Secp256k1Keypair.create(),
    })
    await expectRefused(await syncer.get(url, forged), 401, /signature/)
    const bare = await fetch(url, { headers: { authorization: `DPoP ${credential}` } })
    await expectRefused(bare, 401, /needs a DPoP proof/)
  })

  it('after the authority moved, a syncer reads from the new host with a credential of the new key', async () => {
    const keys = new Map<string, string>()
    const source = await server(keys)
    const alice = await seedSpaceAccount(source)
    keys.set(alice.did, alice.key.did())
    const destination = await server(keys)
    for await (const unit of readPermissionedData({
      client: alice.client,
      did: alice.did,
      signingKey: alice.key.did(),
      blobs: new SqliteAccountSink(destination.accounts),
      limits: { retry: { attempts: 1, baseDelayMs: 1 } },
    }))
      await importPermissionedUnit(destination.spaces, alice.did, unit)
    // The PLC operation: the DID now names the destination's key.
    const newKey = await Secp256k1Keypair.create()
    keys.set(alice.did, newKey.did())
    destination.spaces.setSigningKey(alice.did, newKey)

    const syncer = new SpaceSyncer()
    const url = getRepoUrl(destination, alice.owned, alice.did)
    const stale = await mintSpaceCredential({ space: alice.owned, jkt: syncer.jkt, signer: alice.key })
    expect((await syncer.get(url, stale)).status).toBe(401)
    const fresh = await mintSpaceCredential({ space: alice.owned, jkt: syncer.jkt, signer: newKey })
    const res = await syncer.get(url, fresh)
    expect(res.status).toBe(200)
    const repo = await verifySpaceRepoCar(new Uint8Array(await res.arrayBuffer()), {
      space: alice.owned,
      author: alice.did,
      didKey: newKey.did(),
    })
    expect(repo.records.map((r) => r.rkey).sort()).toEqual(['3lbgkz6qo5c2a', '3lbgkz6qo5c2b'])
  })
})
