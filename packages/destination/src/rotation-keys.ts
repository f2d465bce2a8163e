import { parseDidKey } from '@atproto/crypto'

/** did:plc allows at most this many rotation keys (did:plc spec, "rotationKeys"). */
export const MAX_PLC_ROTATION_KEYS = 5

/** Key types did:plc accepts for rotation: secp256k1 and NIST P-256. */
const PLC_KEY_ALGS = new Set(['ES256K', 'ES256'])

/** A rotation key the user offered cannot be used; nothing was sent anywhere. */
export class RotationKeyError extends Error {
  override readonly name = 'RotationKeyError'
}

/**
 * The rotation keys the destination asks for in completeTransfer: every current key in its
 * order (the source drops its own, decision D8), ours last, and the user's own key first if they
 * gave one, so it outranks every server's during the 72-hour recovery window.
 */
export function moveRotationKeys(current: string[], ours: string, userKey?: string): string[] {
  if (userKey === undefined) return [...current.filter((k) => k !== ours), ours]
  assertRotationKey(userKey)
  if (userKey === ours) throw new RotationKeyError("that is this server's key, not one of your own")
  const keys = [userKey, ...current.filter((k) => k !== ours && k !== userKey), ours]
  // The leaving PDS removes its own key, which is one of `current`.
  if (keys.length - 1 > MAX_PLC_ROTATION_KEYS) {
    throw new RotationKeyError(
      `your identity would have ${keys.length - 1} rotation keys; did:plc allows ${MAX_PLC_ROTATION_KEYS}`,
    )
  }
  return keys
}

/** Throws `RotationKeyError` unless `key` is the did:key of a key type did:plc rotates with. */
export function assertRotationKey(key: string): void {
  let alg: string
  try {
    alg = parseDidKey(key).jwtAlg
  } catch {
    throw new RotationKeyError(`${JSON.stringify(key)} is not the did:key of a secp256k1 or P-256 public key`)
  }
  if (!PLC_KEY_ALGS.has(alg))
    throw new RotationKeyError(`did:plc rotation keys are secp256k1 or P-256, not ${alg}`)
}
