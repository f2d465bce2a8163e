import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { OAuthSourceAuthorizer } from '../src/oauth-source-authorizer.ts'
import { SqliteOAuthStore } from '../src/sqlite-oauth-store.ts'

/**
 * Issue 18, item 9: the source's consent screen can only say who asks and why from our client
 * metadata; a deployment names itself, links its /migrate page, logo, terms and policy.
 */
describe('OAuth client metadata of a deployed destination', () => {
  const cleanup: (() => Promise<void>)[] = []
  afterAll(async () => {
    for (const c of cleanup) await c()
  })

  it('names the operator and links what the consent screen shows', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-oauth-'))
    const store = new SqliteOAuthStore(join(dir, 'oauth.sqlite'))
    cleanup.push(async () => {
      store.close()
      await rm(dir, { recursive: true, force: true })
    })
    const authorizer = await OAuthSourceAuthorizer.create({
      publicUrl: 'https://pds.example.com',
      store,
      clientName: 'Example PDS: move your account here',
      logoUri: 'https://pds.example.com/logo.png',
      tosUri: 'https://pds.example.com/terms',
      policyUri: 'https://pds.example.com/privacy',
    })
    expect(authorizer.metadata).toMatchObject({
      client_id: 'https://pds.example.com/oauth-client-metadata.json',
      client_name: 'Example PDS: move your account here',
      client_uri: 'https://pds.example.com',
      logo_uri: 'https://pds.example.com/logo.png',
      tos_uri: 'https://pds.example.com/terms',
      policy_uri: 'https://pds.example.com/privacy',
    })
  })

  it('has sane defaults: the host names itself, with its own logo; no terms it does not have', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-oauth-'))
    const store = new SqliteOAuthStore(join(dir, 'oauth.sqlite'))
    cleanup.push(async () => {
      store.close()
      await rm(dir, { recursive: true, force: true })
    })
    const { metadata } = await OAuthSourceAuthorizer.create({ publicUrl: 'https://pds.example.com', store })
    expect(metadata).toMatchObject({
      // The conventional path: an untrusted client is shown by its host alone (D26).
      client_id: 'https://pds.example.com/oauth-client-metadata.json',
      client_name: 'pds.example.com account transfer',
      client_uri: 'https://pds.example.com',
      logo_uri: 'https://pds.example.com/oauth-client-logo.svg',
      jwks_uri: 'https://pds.example.com/oauth-client-jwks.json',
    })
    expect(metadata).not.toHaveProperty('tos_uri')
    expect(metadata).not.toHaveProperty('policy_uri')
  })
})
