import { ReferencePdsSource, type TransferPds } from '@pds-transfer/atproto-pds'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seedReferenceAccount } from '../src/fixtures/seed-reference-account.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { startReferencePds } from '../src/harness/reference-pds.ts'

/**
 * The reference PDS as a source stops an account's writes when completeTransfer deactivates
 * it (spec/completion.md, C9), and a user who gives up on the move and reactivates the account
 * through the PDS itself can write again at once (not only when the source sweeps it back).
 */
describe('the reference PDS: write freeze at the end of a move', () => {
  let plcDir: PlcDirectory
  let pds: TransferPds

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    pds = await startReferencePds(plcDir)
  }, 60_000)
  afterAll(async () => {
    await pds?.close()
    await plcDir?.close()
  })

  const xrpc = (nsid: string, jwt: string, body?: unknown) =>
    fetch(`${pds.url}/xrpc/${nsid}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${jwt}`, 'content-type': 'application/json' },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    })
  const post = (did: string, jwt: string, text: string) =>
    xrpc('com.atproto.repo.createRecord', jwt, {
      repo: did,
      collection: 'app.bsky.feed.post',
      record: { $type: 'app.bsky.feed.post', text, createdAt: new Date().toISOString() },
    })

  it('refuses writes once deactivated for the move, and lets them through after the user reactivates', async () => {
    const gina = await seedReferenceAccount(pds.url, {
      handle: 'gina.test',
      email: 'gina@example.com',
      password: 'gina-password-1',
      posts: 2,
      images: 0,
      follows: 0,
    })
    expect((await post(gina.did, gina.accessJwt, 'before')).status).toBe(200)
    // What completeTransfer does first.
    await new ReferencePdsSource(pds.pds.ctx).deactivate(gina.did, {
      retainUntil: new Date(Date.now() + 86_400_000),
    })
    const refused = await post(gina.did, gina.accessJwt, 'during')
    expect(refused.status).toBeGreaterThanOrEqual(400)
    expect(((await refused.json()) as { error: string }).error).toMatch(/AccountDeactivated/)

    // She gives up on the move and reactivates the account at this PDS herself.
    expect((await xrpc('com.atproto.server.activateAccount', gina.accessJwt)).status).toBe(200)
    expect((await post(gina.did, gina.accessJwt, 'after')).status).toBe(200)
  })
})
