/**
 * What the sync-path drills (faults, kills during the pull or the completion) share: how a
 * destination process is set up for a source, and what they check at the end of a move from a
 * reference PDS (plain, or serving the draft): the account at the destination exactly as the
 * source held it, PLC naming the destination, the source deactivated, and nothing half-written.
 * Shared by the drill files so that each judges a move the same way.
 */
import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { PDS } from '@atproto/pds'
import { verifyRepoCar } from '@atproto/repo'
import * as plcLib from '@did-plc/lib'
import { DRAFT_OAUTH_SCOPE } from '@pds-transfer/core'
import type { InboundTransfer, SourceClient } from '@pds-transfer/destination'
import { CID } from 'multiformats/cid'
import { expect } from 'vitest'
import type { SeededAccount } from '../src/fixtures/seed-reference-account.ts'
import { emailedPlcToken } from '../src/harness/plain-pds.ts'
import { oauthSourceClient, routeByNsid } from '../src/harness/plain-pds-oauth.ts'
import type { SqliteAccountStore } from '../src/store/sqlite-account-store.ts'

/** A source PDS of the drills, and the OAuth scope a move from it asks for. */
export interface DrillSource {
  url: string
  pds: PDS
  scope: string
}

/** The source's records (path → CID) as @atproto/repo verifies them, and the key that signed them. */
export interface SourceRepo {
  key: string
  records: Map<string, string>
}

/** The PLC code the source last "emailed" to the account. */
export function plcCode(source: DrillSource, did: string): Promise<string | undefined> {
  return emailedPlcToken(source.pds, did)
}

/**
 * `alice`'s OAuth session at `source`'s own provider, signed in headlessly; requests of the NSIDs
 * `via()` names (`'*'`: any other) go to those base URLs (fault proxies) instead.
 */
export async function signInAt(
  plcUrl: string,
  source: DrillSource,
  alice: SeededAccount,
  via: () => Record<string, string> = () => ({}),
): Promise<SourceClient> {
  const { client } = await oauthSourceClient({
    pdsUrl: source.url,
    plcUrl,
    did: alice.did,
    account: { username: alice.handle, password: alice.password },
    scope: source.scope,
    fetch: routeByNsid(source.url, via),
  })
  return client
}

/**
 * The environment of a destination process (`destination-process.ts`) moving `alice` from
 * `source`, its requests to the source sent through `via`. Its session at the source: her token
 * at a plain PDS; at a draft source (OAuth only) the process signs in itself and keeps the grant.
 */
export function destinationProcessEnv(opts: {
  plcUrl: string
  dir: string
  port: number
  source: DrillSource
  alice: SeededAccount
  via: string
}): Record<string, string> {
  const { source, alice } = opts
  return {
    PLC_URL: opts.plcUrl,
    DEST_DIR: opts.dir,
    DEST_PORT: String(opts.port),
    SOURCE_URL: source.url,
    SOURCE_TOKEN: alice.accessJwt,
    ...(source.scope === DRAFT_OAUTH_SCOPE && {
      SOURCE_OAUTH: JSON.stringify({
        did: alice.did,
        username: alice.handle,
        password: alice.password,
        scope: source.scope,
      }),
    }),
    SOURCE_VIA: opts.via,
  }
}

/** The records of a repo CAR as @atproto/repo verifies them (commit signed by `key`): path → CID. */
export async function recordsOf(car: Uint8Array, did: string, key: string): Promise<Map<string, string>> {
  const verified = await verifyRepoCar(car, did, key)
  return new Map(verified.creates.map((c) => [`${c.collection}/${c.rkey}`, c.cid.toString()]))
}

/**
 * The source's repo as @atproto/repo verifies it with the key PLC names for the DID before the
 * move (record path → CID), and that key.
 */
export async function sourceRecords(plcUrl: string, source: DrillSource, did: string): Promise<SourceRepo> {
  const key = (await new plcLib.Client(plcUrl).getDocumentData(did)).verificationMethods.atproto as string
  const car = await fetch(`${source.url}/xrpc/com.atproto.sync.getRepo?did=${did}`)
  expect(car.status).toBe(200)
  return { key, records: await recordsOf(new Uint8Array(await car.arrayBuffer()), did, key) }
}

/** No staged blocks, no temporary blob files, and every blob file's bytes hash to its CID. */
export async function expectNothingHalfWritten(store: SqliteAccountStore): Promise<void> {
  expect(store.db.prepare('SELECT count(*) AS n FROM staged_block').get()).toEqual({ n: 0 })
  const files = await readdir(join(store.dir, 'blobs'))
  expect(files.filter((f) => f.startsWith('.'))).toEqual([])
  for (const name of files) {
    const digest = createHash('sha256')
      .update(await readFile(join(store.dir, 'blobs', name)))
      .digest()
    expect(Buffer.from(CID.parse(name).multihash.digest).equals(digest), `${name} hashes to its CID`).toBe(
      true,
    )
  }
}

/**
 * The account moved whole: PLC names the destination and its key, the destination's repo
 * verifies with that key and holds exactly the source's records, every blob byte-identical,
 * preferences and email there, active here and deactivated at the source.
 */
export async function expectMoved(opts: {
  plcUrl: string
  source: DrillSource
  store: SqliteAccountStore
  destUrl: string
  alice: SeededAccount
  done: InboundTransfer
  records: SourceRepo
  /** Records the account has at the least (what it was seeded with). */
  minRecords: number
  /** What the preferences must be here (default: the account's; none from a draft source without `preferences`). */
  preferences?: unknown[]
  /** The account is left active at the source, and the user told so in these words. */
  sourceLeftActive?: RegExp
}): Promise<void> {
  const { store, alice, done } = opts
  expect(done.failure).toBeUndefined()
  expect(done).toMatchObject({ status: 'completed', stage: 'activated' })
  if (opts.sourceLeftActive)
    expect(done.sourceLeftActive).toEqual(expect.stringMatching(opts.sourceLeftActive))
  else expect(done.sourceLeftActive).toBeUndefined()
  const doc = await new plcLib.Client(opts.plcUrl).getDocumentData(alice.did)
  expect(doc.services.atproto_pds?.endpoint).toBe(opts.destUrl)
  expect(doc.verificationMethods.atproto).toBe(done.signingKey)
  // The SQLite test PDS keeps the imported head as the source signed it (re-signing it with
  // the new key, decision 10, is the reference PDS sink's `activate`): verified with that key.
  const here = await recordsOf(await store.exportCar(alice.did), alice.did, opts.records.key)
  expect(here.size).toBeGreaterThanOrEqual(opts.minRecords)
  expect([...here].sort()).toEqual([...opts.records.records].sort())
  expect(store.db.prepare('SELECT count(*) AS n FROM blob WHERE did = ?').get(alice.did)).toEqual({
    n: alice.blobs.size,
  })
  for (const [cid, bytes] of alice.blobs) {
    expect((await readFile(store.blobPath(cid))).equals(bytes), `blob ${cid} byte-identical`).toBe(true)
  }
  expect(await store.getPreferences(alice.did)).toEqual(opts.preferences ?? alice.preferences)
  expect(await store.getAccountState(alice.did)).toMatchObject({
    email: `${alice.handle.split('.')[0]}@example.com`,
  })
  expect((await store.getAccount(alice.did))?.status).toBe('active')
  const atSource = await opts.source.pds.ctx.accountManager.getAccount(alice.did as `did:plc:${string}`, {
    includeDeactivated: true,
  })
  if (opts.sourceLeftActive) expect(atSource?.deactivatedAt).toBeFalsy()
  else expect(atSource?.deactivatedAt).toBeTruthy()
  await expectNothingHalfWritten(store)
}
