import {
  generateTransferKey,
  type TransferAlgorithm,
  type TransferPrivateJwk,
  type TransferPublicJwk,
} from '@pds-transfer/core'

/** Persistence of the destination's HPKE keys (private parts included). */
export interface KeyStore {
  list(): Promise<TransferPrivateJwk[]>
  put(key: TransferPrivateJwk): Promise<void>
  remove(kid: string): Promise<void>
}

/** Rotation policy of section 1.4, in seconds. */
export interface KeyPolicy {
  /** Lifetime of a new key (default 90 days: "rotate at least every 90 days"). */
  lifetime: number
  /** A successor is published this long before the current key expires (default 14 days). */
  overlap: number
  /** An expired key still decrypts this long after exp, then is deleted (default 7 days). */
  grace: number
}

export const DEFAULT_KEY_POLICY: KeyPolicy = { lifetime: 90 * 86400, overlap: 14 * 86400, grace: 7 * 86400 }

/**
 * The destination's HPKE keys with rotation: one current key per suite, a successor published
 * beside it before it expires, expired keys kept for in-flight transfers until exp + grace.
 */
export class KeyRing {
  constructor(
    private readonly store: KeyStore,
    readonly algorithms: readonly TransferAlgorithm[],
    private readonly policy: KeyPolicy = DEFAULT_KEY_POLICY,
  ) {}

  /** Creates successors and deletes keys past their grace period. Run at start and periodically. */
  async rotate(now: number = nowSeconds()): Promise<void> {
    const keys = await this.store.list()
    for (const key of keys) {
      if (key.exp !== undefined && key.exp + this.policy.grace <= now) await this.store.remove(key.kid)
    }
    for (const alg of this.algorithms) {
      const fresh = keys.some(
        (k) => k.alg === alg && (k.exp === undefined || k.exp - this.policy.overlap > now),
      )
      if (!fresh) await this.store.put(generateTransferKey({ alg, exp: now + this.policy.lifetime }))
    }
  }

  /** Public keys to publish: every unexpired key. */
  async published(now: number = nowSeconds()): Promise<TransferPublicJwk[]> {
    return (await this.store.list()).filter((k) => k.exp === undefined || k.exp > now)
  }

  /** The key to ask a source to encrypt to: the unexpired one of `alg` that lives longest. */
  async current(alg: TransferAlgorithm, now: number = nowSeconds()): Promise<TransferPrivateJwk | undefined> {
    const usable = (await this.store.list()).filter(
      (k) => k.alg === alg && (k.exp === undefined || k.exp > now),
    )
    return usable.sort((a, b) => (b.exp ?? Number.MAX_SAFE_INTEGER) - (a.exp ?? Number.MAX_SAFE_INTEGER))[0]
  }

  /** A key by kid, for decrypting a transfer started with it (expired keys work until deleted). */
  async byKid(kid: string): Promise<TransferPrivateJwk | undefined> {
    return (await this.store.list()).find((k) => k.kid === kid)
  }
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000)
}
