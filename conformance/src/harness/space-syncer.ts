import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto'
import { jwkThumbprint, signCompactJwt } from '@pds-transfer/core'

/**
 * A syncer of proposal 0016 as a test drives one: a P-256 key that space credentials are bound to
 * (its thumbprint is the `jkt` to put in one), and requests that present a credential with a fresh
 * DPoP proof (RFC 9449) naming the host they are sent to.
 */
export class SpaceSyncer {
  private readonly keys = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  readonly jwk = this.keys.publicKey.export({ format: 'jwk' })
  /** Thumbprint of the syncer's key: a credential's `cnf.jkt`. */
  readonly jkt = jwkThumbprint(this.jwk)

  /** GETs `url` with `credential` and a proof for it (or the `proof` override of a test). */
  async get(
    url: string,
    credential: string,
    options: { proof?: string; htu?: string } = {},
  ): Promise<Response> {
    const proof =
      options.proof ?? (await this.proof('GET', options.htu ?? url.split('?')[0] ?? url, credential))
    return fetch(url, { headers: { authorization: `DPoP ${credential}`, dpop: proof } })
  }

  /** A DPoP proof for one request. */
  proof(
    htm: string,
    htu: string,
    credential: string,
    jti = randomBytes(16).toString('hex'),
  ): Promise<string> {
    return signCompactJwt(
      { typ: 'dpop+jwt', alg: 'ES256', jwk: this.jwk },
      {
        jti,
        htm,
        htu,
        iat: Math.floor(Date.now() / 1000),
        ath: createHash('sha256').update(credential).digest('base64url'),
      },
      async (input) =>
        new Uint8Array(sign('sha256', input, { key: this.keys.privateKey, dsaEncoding: 'ieee-p1363' })),
    )
  }
}
