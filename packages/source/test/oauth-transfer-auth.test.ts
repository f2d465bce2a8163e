import { createHash, randomBytes, randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { JoseKey } from '@atproto/jwk-jose'
import { OAuthVerifier } from '@atproto/oauth-provider/verifier'
import { NSID } from '@pds-transfer/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { OAuthTransferAuth } from '../src/oauth-transfer-auth.ts'
import { sendXrpcError } from '../src/xrpc-reply.ts'

const SERVICE_DID = 'did:web:source.example'
const ISSUER = 'https://source.example'
const USER = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz'
const CLIENT = 'https://destination.example/.well-known/oauth-client-metadata/migration'
/** The provider's token id format (`tok-` + 128 random bits in hex). */
const tokenId = () => `tok-${randomBytes(16).toString('hex')}`
const scope = (nsid: string, aud = `${SERVICE_DID}#atproto_pds`) => `atproto rpc:${nsid}?aud=${aud}`

/**
 * The real resource-server check of @atproto/oauth-provider (token signature, audience,
 * expiry, DPoP proof and key binding, nonces) behind the transfer endpoints, with tokens signed
 * by a provider key and proofs signed by a client key, as a real PDS pair would exchange them.
 */
describe('OAuthTransferAuth', () => {
  let app: FastifyInstance
  let url: string
  let providerKey: JoseKey
  let clientKey: JoseKey
  let verifier: OAuthVerifier

  beforeAll(async () => {
    providerKey = await JoseKey.generate(['ES256'], 'provider-1')
    clientKey = await JoseKey.generate(['ES256'], 'client-1')
    verifier = new OAuthVerifier({ issuer: ISSUER, keyset: [providerKey] })
    const auth = new OAuthTransferAuth({ verifier, publicUrl: ISSUER, serviceDid: SERVICE_DID })
    app = Fastify()
    app.get(`/xrpc/${NSID.getTransferStatus}`, async (request, reply) => {
      try {
        return await auth.verify(request, NSID.getTransferStatus, reply)
      } catch (err) {
        return sendXrpcError(reply, err)
      }
    })
    await app.listen({ host: '127.0.0.1', port: 0 })
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  })
  afterAll(() => app?.close())

  const path = `/xrpc/${NSID.getTransferStatus}`
  const jkt = (key: JoseKey) => {
    const { crv, kty, x, y } = key.publicJwk as { crv: string; kty: string; x: string; y: string }
    return createHash('sha256').update(JSON.stringify({ crv, kty, x, y })).digest('base64url')
  }

  async function token(overrides: Record<string, unknown> = {}) {
    const now = Math.floor(Date.now() / 1000)
    return verifier.signer.createAccessToken({
      sub: USER,
      aud: SERVICE_DID,
      client_id: CLIENT,
      scope: scope(NSID.getTransferStatus),
      cnf: { jkt: jkt(clientKey) },
      iat: now,
      exp: now + 600,
      jti: tokenId(),
      ...overrides,
    } as Parameters<typeof verifier.signer.createAccessToken>[0])
  }

  async function proof(accessToken: string, options: { key?: JoseKey; nonce?: string; htu?: string } = {}) {
    const key = options.key ?? clientKey
    return key.createJwt({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.publicJwk } as never, {
      htm: 'GET',
      htu: options.htu ?? `${ISSUER}${path}`,
      iat: Math.floor(Date.now() / 1000),
      jti: randomUUID(),
      ath: createHash('sha256').update(accessToken).digest('base64url'),
      ...(options.nonce && { nonce: options.nonce }),
    })
  }

  /** Sends a request, answering a use_dpop_nonce challenge once, as the OAuth client does. */
  async function call(accessToken: string | undefined, options: Parameters<typeof proof>[1] = {}) {
    const send = async (nonce?: string) => {
      const headers: Record<string, string> = {}
      if (accessToken) {
        headers.authorization = `DPoP ${accessToken}`
        headers.dpop = await proof(accessToken, { ...options, ...(nonce && { nonce }) })
      }
      return fetch(`${url}${path}`, { headers })
    }
    let res = await send()
    const challenge = res.headers.get('www-authenticate') ?? ''
    if (res.status === 401 && challenge.includes('use_dpop_nonce')) {
      res = await send(res.headers.get('dpop-nonce') ?? undefined)
    }
    return res
  }

  it('accepts a DPoP-bound token with the rpc scope for this PDS: the caller is sub and client_id', async () => {
    const res = await call(await token())
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ did: USER, clientId: CLIENT })
    expect(res.headers.get('dpop-nonce')).toBeTruthy()
  })

  it('401 with a challenge for a missing token (erratum E3)', async () => {
    const res = await call(undefined)
    expect(res.status).toBe(401)
    expect(await res.json()).toMatchObject({ error: 'TransferNotAuthorized' })
    expect(res.headers.get('www-authenticate')).toMatch(/DPoP|Bearer/)
  })

  it.each([
    ['expired', { exp: Math.floor(Date.now() / 1000) - 60 }],
    ['for another audience', { aud: 'did:web:elsewhere.example' }],
  ])('401 for a token %s', async (_what, overrides) => {
    const res = await call(await token(overrides))
    expect(res.status).toBe(401)
    expect(await res.json()).toMatchObject({ error: 'TransferNotAuthorized' })
    expect(res.headers.get('www-authenticate')).toMatch(/invalid_token/)
  })

  it('401 for a token signed by another provider key', async () => {
    const rogue = await JoseKey.generate(['ES256'], 'provider-1')
    const forged = await new OAuthVerifier({ issuer: ISSUER, keyset: [rogue] }).signer.createAccessToken({
      sub: USER,
      aud: SERVICE_DID,
      client_id: CLIENT,
      scope: scope(NSID.getTransferStatus),
      cnf: { jkt: jkt(clientKey) },
      iat: Math.floor(Date.now() / 1000),
      exp: Math.floor(Date.now() / 1000) + 600,
      jti: tokenId(),
    } as never)
    expect((await call(forged)).status).toBe(401)
  })

  it('401 for a DPoP proof by another key than the token is bound to, or for another URL', async () => {
    const other = await JoseKey.generate(['ES256'], 'client-2')
    expect((await call(await token(), { key: other })).status).toBe(401)
    expect((await call(await token(), { htu: `${ISSUER}/xrpc/other` })).status).toBe(401)
  })

  it('401 for a DPoP-bound token presented as a bearer token', async () => {
    const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${await token()}` } })
    expect(res.status).toBe(401)
  })

  it.each([
    ['without the rpc scope', 'atproto'],
    ['with the scope for another endpoint', scope(NSID.exportAccount)],
    [
      'with the scope for another PDS',
      scope(NSID.getTransferStatus, 'did:web:elsewhere.example#atproto_pds'),
    ],
    ['with a bare rpc scope (no aud: does not parse)', `atproto rpc:${NSID.getTransferStatus}`],
  ])('403 TransferNotAuthorized for a valid token %s', async (_what, granted) => {
    const res = await call(await token({ scope: granted }))
    expect(res.status).toBe(403)
    expect(await res.json()).toMatchObject({ error: 'TransferNotAuthorized' })
  })

  it('401 for a token without the atproto scope', async () => {
    const res = await call(
      await token({ scope: `rpc:${NSID.getTransferStatus}?aud=${SERVICE_DID}%23atproto_pds` }),
    )
    expect(res.status).toBe(401)
  })
})
