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
      client_id: 'https://pds.example.com/.well-known/oauth-client-metadata/migration',
      client_name: 'Example PDS: move your account here',
      client_uri: 'https://pds.example.com/migrate',
      logo_uri: 'https://pds.example.com/logo.png',
      tos_uri: 'https://pds.example.com/terms',
      policy_uri: 'https://pds.example.com/privacy',
    })
  })
})
