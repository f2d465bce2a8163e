import { AtpAgent } from '@atproto/api'
import { Phases } from './timeline.ts'

/** An account to move by today's client-orchestrated migration, and where to. */
export interface ClientMigrationInput {
  oldPdsUrl: string
  newPdsUrl: string
  /** Handle or DID, and the password of the account at the old PDS. */
  identifier: string
  password: string
  /** Handle, email and password of the new account (goat's --new-handle, --new-email, --new-password). */
  newHandle: string
  newEmail: string
  newPassword: string
  /** Reads the PLC code the old PDS emails after requestPlcOperationSignature. */
  readPlcToken(): Promise<string>
}

/** Timings and volumes of one client-orchestrated migration. */
export interface ClientMigrationResult {
  did: string
  seconds: number
  phases: Phases['list']
  carBytes: number
  blobs: number
  blobBytes: number
}

/**
 * Today's migration between two PDSes, driven by a client with password sessions exactly as
 * goat's `account migrate` and the official account-migration guide do it, through
 * `@atproto/api`: log in at the old PDS; a service-auth token from it for `createAccount` at
 * the new PDS with the existing DID (the account starts deactivated); `getRepo` → `importRepo`;
 * `listMissingBlobs` at the new PDS → `getBlob` → `uploadBlob`, one blob at a time;
 * preferences; the PLC operation (requested and signed at the old PDS with the emailed code,
 * submitted at the new one); `activateAccount` at the new PDS, `deactivateAccount` at the old.
 * Every byte passes through the client. Timed from the login to the old account's deactivation.
 */
export async function migrateByClient(input: ClientMigrationInput): Promise<ClientMigrationResult> {
  const phases = new Phases()
  const oldAgent = new AtpAgent({ service: input.oldPdsUrl })
  const newAgent = new AtpAgent({ service: input.newPdsUrl })

  await oldAgent.login({ identifier: input.identifier, password: input.password })
  const did = oldAgent.assertDid
  phases.lap('login at the old PDS')

  const newServerDid = (await newAgent.com.atproto.server.describeServer()).data.did
  const serviceAuth = await oldAgent.com.atproto.server.getServiceAuth({
    aud: newServerDid,
    lxm: 'com.atproto.server.createAccount',
    exp: Math.floor(Date.now() / 1000) + 60,
  })
  await newAgent.createAccount(
    { did, handle: input.newHandle, email: input.newEmail, password: input.newPassword },
    { headers: { authorization: `Bearer ${serviceAuth.data.token}` }, encoding: 'application/json' },
  )
  // @atproto/api then points the session at the PDS named in the returned DID document, which
  // during a migration is still the old one; goat talks to the host it was given. So do we.
  newAgent.sessionManager.pdsUrl = new URL(input.newPdsUrl)
  phases.lap('service auth + createAccount (deactivated) at the new PDS')

  const car = (await oldAgent.com.atproto.sync.getRepo({ did })).data
  await newAgent.com.atproto.repo.importRepo(car, { encoding: 'application/vnd.ipld.car' })
  phases.lap('getRepo → importRepo')

  let blobs = 0
  let blobBytes = 0
  let cursor: string | undefined
  do {
    const page = await newAgent.com.atproto.repo.listMissingBlobs({ cursor, limit: 500 })
    for (const { cid } of page.data.blobs) {
      const blob = await oldAgent.com.atproto.sync.getBlob({ did, cid })
      await newAgent.com.atproto.repo.uploadBlob(blob.data, { encoding: blob.headers['content-type'] })
      blobs++
      blobBytes += blob.data.byteLength
    }
    cursor = page.data.cursor
  } while (cursor)
  phases.lap('listMissingBlobs → getBlob → uploadBlob')

  const preferences = await oldAgent.app.bsky.actor.getPreferences()
  await newAgent.app.bsky.actor.putPreferences(preferences.data)
  phases.lap('preferences')

  await oldAgent.com.atproto.identity.requestPlcOperationSignature()
  const token = await input.readPlcToken()
  const credentials = (await newAgent.com.atproto.identity.getRecommendedDidCredentials()).data
  const signed = await oldAgent.com.atproto.identity.signPlcOperation({ token, ...credentials })
  await newAgent.com.atproto.identity.submitPlcOperation({ operation: signed.data.operation })
  phases.lap('PLC: request code, credentials, sign, submit')

  await newAgent.com.atproto.server.activateAccount()
  await oldAgent.com.atproto.server.deactivateAccount({})
  phases.lap('activate new, deactivate old')

  return { did, seconds: phases.seconds, phases: phases.list, carBytes: car.byteLength, blobs, blobBytes }
}
