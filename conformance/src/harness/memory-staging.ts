import {
  type RepoStaging,
  type VerifiedRepo,
  verifiedCarBatches,
  verifyStagedRepo,
} from '@pds-transfer/destination'

/** A `RepoStaging` in memory: for checking a CAR with the destination's verifier, no sink involved. */
export class MemoryStaging implements RepoStaging {
  private readonly blocks = new Map<string, Uint8Array>()

  async put(blocks: { cid: Uint8Array; bytes: Uint8Array }[]): Promise<void> {
    for (const b of blocks) this.blocks.set(Buffer.from(b.cid).toString('hex'), Uint8Array.from(b.bytes))
  }

  async get(cid: Uint8Array): Promise<Uint8Array | undefined> {
    return this.blocks.get(Buffer.from(cid).toString('hex'))
  }

  async discard(): Promise<void> {
    this.blocks.clear()
  }
}

/** A whole CAR through the destination's verifier, as the frame importer runs it. */
export async function verifyCarWithDestination(
  car: Uint8Array,
  did: string,
  signingKey: string,
): Promise<VerifiedRepo> {
  const staging = new MemoryStaging()
  let root: Parameters<typeof verifyStagedRepo>[0]['root'] | undefined
  const chunks = (async function* () {
    yield car
  })()
  for await (const batch of verifiedCarBatches(chunks, { onRoot: (r) => (root = r) }))
    await staging.put(batch)
  if (!root) throw new Error('no root')
  return verifyStagedRepo({ staging, root, did, signingKey })
}
