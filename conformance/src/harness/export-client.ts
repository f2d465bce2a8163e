import {
  CONTENT_TYPE,
  decodeAccountState,
  decodeFrames,
  jwkPrivateKeyBytes,
  NSID,
  publicJwk,
  readBlobpack,
  setupRecipient,
  type TransferAlgorithm,
  type TransferPrivateJwk,
} from '@pds-transfer/core'
import { request } from 'undici'

/** POSTs exportAccount; returns the raw response (the body is not read). */
export async function postExport(
  sourceUrl: string,
  token: string | undefined,
  input: { did: string; transferId: string; algorithm: string; encryptionKey: unknown; [k: string]: unknown },
) {
  return request(`${sourceUrl}/xrpc/${NSID.exportAccount}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token && { authorization: `Bearer ${token}` }) },
    body: JSON.stringify(input),
  })
}

/** Everything one exportAccount stream carried, decrypted and checked by core's decoders. */
export interface DecodedExport {
  contentTypes: string[]
  car: Uint8Array
  blobs: Map<string, Uint8Array>
  preferences?: unknown[]
  state?: ReturnType<typeof decodeAccountState>
}

/** Runs exportAccount and decodes the whole response in memory (test-sized accounts only). */
export async function exportAndDecode(
  sourceUrl: string,
  token: string,
  did: string,
  transferId: string,
  key: TransferPrivateJwk,
): Promise<DecodedExport> {
  const res = await postExport(sourceUrl, token, {
    did,
    transferId,
    algorithm: key.alg,
    encryptionKey: publicJwk(key),
  })
  if (res.statusCode !== 200) throw new Error(`exportAccount: ${res.statusCode} ${await res.body.text()}`)
  const algorithm = res.headers['atproto-transfer-algorithm'] as TransferAlgorithm
  const enc = Buffer.from(String(res.headers['atproto-transfer-enc']), 'base64url')
  const keys = await setupRecipient({
    algorithm,
    recipientPrivateKey: jwkPrivateKeyBytes(key),
    enc,
    did,
    transferId,
  })
  const out: DecodedExport = { contentTypes: [], car: new Uint8Array(0), blobs: new Map() }
  for await (const frame of decodeFrames(res.body, { keys })) {
    out.contentTypes.push(frame.contentType)
    if (frame.contentType === CONTENT_TYPE.blobpack) {
      await readBlobpack(frame.plaintext(), {
        onBlob: ({ cid }) => {
          const parts: Uint8Array[] = []
          return {
            write: (c) => void parts.push(Uint8Array.from(c)),
            end: () => void out.blobs.set(cid.toString(), Buffer.concat(parts)),
            abort: () => {},
          }
        },
      })
      continue
    }
    const parts: Uint8Array[] = []
    for await (const c of frame.plaintext()) parts.push(Uint8Array.from(c))
    const bytes = Buffer.concat(parts)
    if (frame.contentType === CONTENT_TYPE.repoCar) out.car = bytes
    else if (frame.contentType === CONTENT_TYPE.preferences)
      out.preferences = JSON.parse(bytes.toString('utf8'))
    else if (frame.contentType === CONTENT_TYPE.accountState) out.state = decodeAccountState(bytes)
  }
  return out
}
