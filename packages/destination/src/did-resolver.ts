import * as plc from '@did-plc/lib'

/** What the destination needs from an account's DID document. */
export interface ResolvedDid {
  did: string
  /** `did:key` of the `#atproto` verification method: the key that signs repo commits. */
  signingKey: string
  /** The `atproto_pds` service endpoint: the source PDS. */
  pds: string
  rotationKeys: string[]
  handle?: string
}

export interface DidResolver {
  resolve(did: string): Promise<ResolvedDid>
}

/** Resolves `did:plc` identities at a PLC directory. */
export class PlcDidResolver implements DidResolver {
  readonly client: plc.Client

  constructor(plcUrl: string) {
    this.client = new plc.Client(plcUrl)
  }

  async resolve(did: string): Promise<ResolvedDid> {
    if (!did.startsWith('did:plc:'))
      throw new Error(`${did} is not a did:plc (did:web accounts cannot move by PLC operation)`)
    const data = await this.client.getDocumentData(did)
    const signingKey = data.verificationMethods.atproto
    const pds = data.services.atproto_pds?.endpoint
    if (!signingKey || !pds) throw new Error(`${did} has no atproto signing key or PDS in its DID document`)
    const handle = data.alsoKnownAs.find((a) => a.startsWith('at://'))?.slice('at://'.length)
    return { did, signingKey, pds, rotationKeys: data.rotationKeys, ...(handle && { handle }) }
  }
}
