import { describe, expect, it } from 'vitest'
import { TRANSFER_ERROR_STATUS, TransferError } from '../src/errors.ts'
import {
  isUuidV7,
  NSID,
  TRANSFER_LEXICONS,
  transferLexicons,
  validateCompleteTransferInput,
  validateCompleteTransferOutput,
  validateExportAccountInput,
  validateGetTransferStatusOutput,
  validateGetTransferStatusParams,
  validateRequestPlcTokenInput,
} from '../src/lexicons.ts'

const TRANSFER_ID = '019537a1-7e28-7def-8c56-3a8b69e2d471'
const UUID_V4 = '9b2c5f7e-3d1a-4c8b-9e2f-1a2b3c4d5e6f'

/** Section 2.1 request body, verbatim. */
const EXPORT_EXAMPLE = {
  did: 'did:plc:abc123',
  transferId: TRANSFER_ID,
  algorithm: 'HPKE-3',
  encryptionKey: {
    kty: 'OKP',
    crv: 'X25519',
    x: '<base64url-destination-public-key>',
    kid: 'transfer-key-2026-03',
    alg: 'HPKE-3',
    use: 'enc',
  },
}

/** Section 2.2 request body, verbatim. */
const COMPLETE_EXAMPLE = {
  did: 'did:plc:abc123',
  transferId: TRANSFER_ID,
  plcSignatureToken: '<email-delivered-token>',
  newPdsEndpoint: 'https://destination.pds.example',
  newSigningKey: 'did:key:zQ3sh...',
  newRotationKeys: ['did:key:zQ3sh...'],
}

/** Section 2.3 response body, verbatim. */
const STATUS_EXAMPLE = {
  transferId: TRANSFER_ID,
  did: 'did:plc:abc123',
  status: 'exporting',
  progress: { framesReceived: 12, bytesReceived: 104857600 },
}

/** Asserts `fn` throws `InvalidRequest` with a message containing `field`. */
function expectInvalidRequest(fn: () => unknown, field: string): void {
  let thrown: unknown
  try {
    fn()
  } catch (err) {
    thrown = err
  }
  expect(thrown).toBeInstanceOf(TransferError)
  const err = thrown as TransferError
  expect(err.error).toBe('InvalidRequest')
  expect(err.status).toBe(400)
  expect(err.message).toContain(field)
}

describe('lexicon documents', () => {
  it('loads the five documents (four of 0014, one extension) with unresolved refs', () => {
    expect(TRANSFER_LEXICONS.map((d) => d.id)).toEqual([
      'com.atproto.transfer.defs',
      NSID.exportAccount,
      NSID.completeTransfer,
      NSID.getTransferStatus,
      NSID.requestPlcToken,
    ])
    // Lexicons.add rewrites refs in place; the exported docs must still read as on disk.
    expect(JSON.stringify(TRANSFER_LEXICONS)).not.toContain('lex:')
    expect(transferLexicons.getDef('com.atproto.transfer.defs#transferKey')?.type).toBe('object')
  })

  it('validates requestPlcToken input (extension plc-token-refresh)', () => {
    const ok = { did: 'did:plc:ewvi7nxzyoun6zhxrhs64oiz', transferId: '019537a1-7e28-7def-8c56-3a8b69e2d471' }
    expect(validateRequestPlcTokenInput(ok)).toEqual(ok)
    for (const bad of [{}, { ...ok, did: 'alice' }, { ...ok, transferId: 'not-a-uuid' }, null]) {
      expect(() => validateRequestPlcTokenInput(bad)).toThrowError(TransferError)
    }
  })

  it('declares only error names the errors module knows', () => {
    for (const doc of TRANSFER_LEXICONS) {
      const main = doc.defs.main
      if (!main || !('errors' in main)) continue
      for (const { name } of main.errors ?? []) expect(Object.keys(TRANSFER_ERROR_STATUS)).toContain(name)
    }
  })
})

describe('isUuidV7', () => {
  it.each([
    [TRANSFER_ID, true],
    [TRANSFER_ID.toUpperCase(), true],
    [UUID_V4, false],
    ['019537a1-7e28-7def-0c56-3a8b69e2d471', false], // variant 0xxx
    ['019537a1-7e28-7def-cc56-3a8b69e2d471', false], // variant 110x
    ['019537a17e287def8c563a8b69e2d471', false], // no hyphens
    [`${TRANSFER_ID}0`, false],
    ['', false],
  ])('%s -> %s', (s, expected) => {
    expect(isUuidV7(s)).toBe(expected)
  })
})

describe('exportAccount input', () => {
  it('accepts the section 2.1 example', () => {
    expect(validateExportAccountInput(structuredClone(EXPORT_EXAMPLE))).toEqual(EXPORT_EXAMPLE)
  })

  it('accepts exp, extensions and unknown JWK members', () => {
    const body = {
      ...EXPORT_EXAMPLE,
      encryptionKey: { ...EXPORT_EXAMPLE.encryptionKey, exp: 1743465600, ext: true },
      extensions: ['end-manifest'],
    }
    expect(validateExportAccountInput(body)).toEqual(body)
  })

  const without = (key: string) =>
    Object.fromEntries(Object.entries(EXPORT_EXAMPLE).filter(([k]) => k !== key))
  const withKey = (patch: Record<string, unknown>) => ({
    ...EXPORT_EXAMPLE,
    encryptionKey: { ...EXPORT_EXAMPLE.encryptionKey, ...patch },
  })
  const withoutKeyField = (key: string) => ({
    ...EXPORT_EXAMPLE,
    encryptionKey: Object.fromEntries(
      Object.entries(EXPORT_EXAMPLE.encryptionKey).filter(([k]) => k !== key),
    ),
  })

  it.each([
    ['missing did', without('did'), 'did'],
    ['missing transferId', without('transferId'), 'transferId'],
    ['missing algorithm', without('algorithm'), 'algorithm'],
    ['missing encryptionKey', without('encryptionKey'), 'encryptionKey'],
    ['transferId a number', { ...EXPORT_EXAMPLE, transferId: 42 }, 'transferId'],
    ['transferId a UUIDv4', { ...EXPORT_EXAMPLE, transferId: UUID_V4 }, 'transferId'],
    ['transferId not a UUID', { ...EXPORT_EXAMPLE, transferId: 'transfer-1' }, 'transferId'],
    ['did not a DID', { ...EXPORT_EXAMPLE, did: 'abc123' }, 'did'],
    ['did a handle', { ...EXPORT_EXAMPLE, did: 'alice.bsky.social' }, 'did'],
    ['algorithm an array', { ...EXPORT_EXAMPLE, algorithm: ['HPKE-3'] }, 'algorithm'],
    ['encryptionKey a string', { ...EXPORT_EXAMPLE, encryptionKey: 'OKP' }, 'encryptionKey'],
    ['encryptionKey without kid', withoutKeyField('kid'), 'kid'],
    ['encryptionKey without x', withoutKeyField('x'), 'x'],
    ['encryptionKey.use a boolean', withKey({ use: true }), 'use'],
    ['encryptionKey.exp a string', withKey({ exp: '1743465600' }), 'exp'],
    ['encryptionKey.exp fractional', withKey({ exp: 1.5 }), 'exp'],
    ['extensions a string', { ...EXPORT_EXAMPLE, extensions: 'end-manifest' }, 'extensions'],
    ['extensions with a number', { ...EXPORT_EXAMPLE, extensions: [1] }, 'extensions'],
    [
      '17 extensions',
      { ...EXPORT_EXAMPLE, extensions: Array.from({ length: 17 }, (_, i) => `x${i}`) },
      'extensions',
    ],
  ])('rejects %s', (_name, body, field) => {
    expectInvalidRequest(() => validateExportAccountInput(body), field)
  })

  it.each([null, [], 'did:plc:abc123', 7])('rejects a non-object body %j', (body) => {
    expectInvalidRequest(() => validateExportAccountInput(body), 'Input')
  })
})

describe('completeTransfer input', () => {
  it('accepts the section 2.2 example', () => {
    expect(validateCompleteTransferInput(structuredClone(COMPLETE_EXAMPLE))).toEqual(COMPLETE_EXAMPLE)
  })

  const without = (key: string) =>
    Object.fromEntries(Object.entries(COMPLETE_EXAMPLE).filter(([k]) => k !== key))

  it.each(Object.keys(COMPLETE_EXAMPLE))('rejects a body without %s', (key) => {
    expectInvalidRequest(() => validateCompleteTransferInput(without(key)), key)
  })

  it.each([
    ['transferId a UUIDv4', { transferId: UUID_V4 }, 'transferId'],
    ['did not a DID', { did: 'plc:abc123' }, 'did'],
    ['plcSignatureToken a number', { plcSignatureToken: 123456 }, 'plcSignatureToken'],
    ['newPdsEndpoint not a URI', { newPdsEndpoint: 'destination.pds.example' }, 'newPdsEndpoint'],
    ['newSigningKey an object', { newSigningKey: {} }, 'newSigningKey'],
    ['newRotationKeys a string', { newRotationKeys: 'did:key:zQ3sh...' }, 'newRotationKeys'],
    ['newRotationKeys with a number', { newRotationKeys: [1] }, 'newRotationKeys'],
  ])('rejects %s', (_name, patch, field) => {
    expectInvalidRequest(() => validateCompleteTransferInput({ ...COMPLETE_EXAMPLE, ...patch }), field)
  })
})

describe('completeTransfer output', () => {
  it('accepts a signed operation object', () => {
    const out = { signedPlcOperation: { type: 'plc_operation', prev: 'bafy...', sig: 'abc' } }
    expect(validateCompleteTransferOutput(out)).toEqual(out)
  })

  it.each([
    ['missing signedPlcOperation', {}],
    ['signedPlcOperation a string', { signedPlcOperation: 'op' }],
  ])('rejects %s', (_name, out) => {
    expect(() => validateCompleteTransferOutput(out)).toThrow(/signedPlcOperation/)
  })
})

describe('getTransferStatus', () => {
  it('accepts the section 2.3 request parameters', () => {
    expect(validateGetTransferStatusParams({ transferId: TRANSFER_ID })).toEqual({ transferId: TRANSFER_ID })
  })

  it.each([
    ['missing transferId', {}],
    ['no query at all', undefined],
    ['transferId repeated', { transferId: [TRANSFER_ID, TRANSFER_ID] }],
    ['transferId a UUIDv4', { transferId: UUID_V4 }],
  ])('rejects params with %s', (_name, query) => {
    expectInvalidRequest(() => validateGetTransferStatusParams(query), 'transferId')
  })

  it('accepts the section 2.3 response', () => {
    expect(validateGetTransferStatusOutput(structuredClone(STATUS_EXAMPLE))).toEqual(STATUS_EXAMPLE)
  })

  it('accepts a failed transfer with our counters, and an unknown future status', () => {
    const failed = {
      ...STATUS_EXAMPLE,
      status: 'failed',
      progress: { framesSent: 3, bytesSent: 10, blobsSent: 2, blobsReceived: 2, blobsMissing: 0 },
      error: 'ExportFailed',
      reason: 'blob store unavailable',
    }
    expect(validateGetTransferStatusOutput(failed)).toEqual(failed)
    expect(validateGetTransferStatusOutput({ ...STATUS_EXAMPLE, status: 'paused' }).status).toBe('paused')
  })

  it.each([
    ['status a number', { status: 3 }, 'status'],
    ['status null', { status: null }, 'status'],
    ['did not a DID', { did: 'abc123' }, 'did'],
    ['progress missing', { progress: undefined }, 'progress'],
    ['a negative counter', { progress: { framesReceived: -1 } }, 'framesReceived'],
    ['a string counter', { progress: { bytesReceived: '10' } }, 'bytesReceived'],
    ['error a number', { error: 500 }, 'error'],
  ])('rejects a response with %s', (_name, patch, field) => {
    let thrown: unknown
    try {
      validateGetTransferStatusOutput({ ...STATUS_EXAMPLE, ...patch })
    } catch (err) {
      thrown = err
    }
    // A bad response is the peer's fault, not an XRPC error of ours.
    expect(thrown).toBeInstanceOf(Error)
    expect(thrown).not.toBeInstanceOf(TransferError)
    expect((thrown as Error).message).toContain(field)
  })
})
