import { isValidDid, isValidNsid, isValidRecordKey } from '@atproto/syntax'
import { SpaceError } from './space-errors.ts'

/**
 * A space of proposal 0016: the `(authority, type, skey)` triple, written
 * `at://{authority}/space/{type}/{skey}` (a "space-ref"). Authority is a DID (never a handle),
 * type an NSID, skey a record key of at most 512 bytes.
 */
export interface SpaceRef {
  authority: string
  type: string
  skey: string
}

const SPACE_REF = /^at:\/\/([^/]+)\/space\/([^/]+)\/([^/]+)$/
const MAX_SKEY_BYTES = 512

/** Parses a space-ref; throws `InvalidRequest` naming what is wrong. */
export function parseSpaceRef(value: string): SpaceRef {
  const match = SPACE_REF.exec(value)
  if (!match) throw invalid(`${JSON.stringify(value)} is not at://{authority}/space/{type}/{skey}`)
  const [, authority, type, skey] = match as unknown as [string, string, string, string]
  if (!isValidDid(authority)) throw invalid(`space authority ${JSON.stringify(authority)} is not a DID`)
  if (!isValidNsid(type)) throw invalid(`space type ${JSON.stringify(type)} is not an NSID`)
  if (!isValidRecordKey(skey) || Buffer.byteLength(skey) > MAX_SKEY_BYTES)
    throw invalid(`space key ${JSON.stringify(skey)} is not a record key of at most ${MAX_SKEY_BYTES} bytes`)
  return { authority, type, skey }
}

/** The space-ref string of a space. */
export function formatSpaceRef(space: SpaceRef): string {
  return `at://${space.authority}/space/${space.type}/${space.skey}`
}

function invalid(message: string): SpaceError {
  return new SpaceError('InvalidRequest', message)
}
