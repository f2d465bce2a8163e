import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { verifySignature } from '@atproto/crypto'
import { hkdfExpandSha256 } from './hkdf-expand.ts'

/** The commit format version of 0016 (the `v1` of the `atproto-space-v1` tag). */
export const SPACE_COMMIT_VERSION = 1

/** `com.atproto.space.defs#signedCommit`: a permissioned repo's digest, deniably signed. */
export interface SignedSpaceCommit {
  ver: number
  /** sha256 of the LtHash state (32 bytes). */
  hash: Uint8Array
  /** Per-signature nonce (32 random bytes). */
  ikm: Uint8Array
  /** Signature over `ctx` by the author's `#atproto` signing key. */
  sig: Uint8Array
  /** HMAC-SHA256(HKDF-Expand(ikm, ctx, 32), hash). */
  mac: Uint8Array
  /** Commit revision (TID). */
  rev: string
}

/** What a commit's `ctx` binds besides the nonce. */
export interface SpaceCommitContext {
  /** Space-ref of the space. */
  space: string
  /** DID of the repo's author. */
  author: string
  rev: string
}

/** Signs `ctx` (returns the signature); an `@atproto/crypto` `Keypair` fits. */
export interface CommitSigner {
  sign(message: Uint8Array): Promise<Uint8Array>
}

const TAG = new TextEncoder().encode('atproto-space-v1')

/**
 * `ctx` of 0016's "Commit signature": the tag, then space, author, rev and ikm each prefixed by
 * its length as a big-endian uint16 (TLS 1.3 vectors).
 */
export function encodeCommitContext(context: SpaceCommitContext, ikm: Uint8Array): Uint8Array {
  const encoder = new TextEncoder()
  const fields = [
    encoder.encode(context.space),
    encoder.encode(context.author),
    encoder.encode(context.rev),
    ikm,
  ]
  let size = TAG.length
  for (const field of fields) {
    if (field.length > 0xffff) throw new RangeError('a commit ctx field is longer than a uint16 length')
    size += 2 + field.length
  }
  const out = new Uint8Array(size)
  out.set(TAG)
  let offset = TAG.length
  for (const field of fields) {
    out[offset++] = field.length >>> 8
    out[offset++] = field.length & 0xff
    out.set(field, offset)
    offset += field.length
  }
  return out
}

/**
 * A commit over `hash` (a set hash digest) with a fresh `ikm`: 0016 has the host make a new one
 * for every reader it serves the commit to, so each reader gets a differently signed commit.
 */
export async function signSpaceCommit(
  context: SpaceCommitContext,
  hash: Uint8Array,
  signer: CommitSigner,
): Promise<SignedSpaceCommit> {
  const ikm = new Uint8Array(randomBytes(32))
  const ctx = encodeCommitContext(context, ikm)
  return {
    ver: SPACE_COMMIT_VERSION,
    hash,
    ikm,
    sig: await signer.sign(ctx),
    mac: commitMac(ikm, ctx, hash),
    rev: context.rev,
  }
}

/**
 * Why a commit does not verify for `context` under `didKey`, or `undefined` when it does: the
 * version, the rev, the MAC (integrity of `hash`) and the signature (authenticity of ctx).
 */
export async function checkSpaceCommit(
  commit: SignedSpaceCommit,
  context: SpaceCommitContext,
  didKey: string,
): Promise<string | undefined> {
  if (commit.ver !== SPACE_COMMIT_VERSION) return `commit version ${commit.ver}, not ${SPACE_COMMIT_VERSION}`
  if (commit.rev !== context.rev) return `commit rev ${commit.rev} is not ${context.rev}`
  if (commit.hash.length !== 32) return `commit hash is ${commit.hash.length} bytes, not 32`
  if (commit.ikm.length !== 32) return `commit ikm is ${commit.ikm.length} bytes, not 32`
  const ctx = encodeCommitContext(context, commit.ikm)
  const mac = commitMac(commit.ikm, ctx, commit.hash)
  if (commit.mac.length !== mac.length || !timingSafeEqual(commit.mac, mac))
    return 'commit MAC does not bind its hash to its context'
  const signed = await verifySignature(didKey, ctx, commit.sig).catch(() => false)
  if (!signed) return `commit signature does not verify with ${didKey}`
  return undefined
}

function commitMac(ikm: Uint8Array, ctx: Uint8Array, hash: Uint8Array): Uint8Array {
  // HKDF-Expand only: ikm is already uniformly random (0016), as in our frame keys (decision 3).
  return new Uint8Array(
    createHmac('sha256', hkdfExpandSha256(ikm, ctx, 32))
      .update(hash)
      .digest(),
  )
}
