// Run: bash scripts/dev npx tsx packages/core/examples/round-trip.ts
// One frame of a transfer, both sides: the source encrypts, the destination decrypts.
import {
  CONTENT_TYPE,
  decodeFrames,
  FrameEncoder,
  generateTransferKey,
  jwkPrivateKeyBytes,
  jwkPublicKeyBytes,
  parseTransferPublicJwk,
  publicJwk,
  setupRecipient,
  setupSender,
} from '@pds-transfer/core'

const did = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz'
const transferId = '019537a1-7e28-7def-8c56-3a8b69e2d471'

// Destination: a key it publishes at /.well-known/atproto-transfer and sends in exportAccount.
const destinationKey = generateTransferKey({ alg: 'HPKE-3', exp: Math.floor(Date.now() / 1000) + 86400 })

// Source: checks the key, sets up HPKE, encrypts frames.
const key = parseTransferPublicJwk(publicJwk(destinationKey), { now: Math.floor(Date.now() / 1000) })
const sender = await setupSender({
  algorithm: key.alg,
  recipientPublicKey: jwkPublicKeyBytes(key),
  did,
  transferId,
})
const prefs = new TextEncoder().encode('[{"$type":"app.bsky.actor.defs#adultContentPref","enabled":false}]')
const encoder = new FrameEncoder(sender.keys)
const wire: Uint8Array[] = []
for await (const chunk of encoder.encodeFrame(CONTENT_TYPE.preferences, prefs, prefs.length)) wire.push(chunk)

// Destination: the `enc` arrives in the Atproto-Transfer-Enc header.
const keys = await setupRecipient({
  algorithm: 'HPKE-3',
  recipientPrivateKey: jwkPrivateKeyBytes(destinationKey),
  enc: sender.enc,
  did,
  transferId,
})
for await (const frame of decodeFrames(wire, { keys })) {
  const parts: Uint8Array[] = []
  for await (const chunk of frame.plaintext()) parts.push(chunk) // ends normally only if the tag verifies
  console.log(frame.frameNumber, frame.contentType, Buffer.concat(parts).toString())
}
