import { createHash } from 'node:crypto'
import { CarBlockIterator } from '@ipld/car/iterator'
import { TransferError } from '@pds-transfer/core'
import type { CID } from 'multiformats/cid'
import type { VerifiedBlock } from './account-sink.ts'

const SHA2_256 = 0x12
const DAG_CBOR = 0x71

/** A repo CAR that is malformed or carries a block whose bytes do not hash to its CID. */
export class InvalidRepoError extends Error {
  override readonly name = 'InvalidRepoError'
}

/**
 * Streams a CAR's blocks, each checked against its CID (CIDv1, dag-cbor, sha2-256, as repo
 * blocks must be), in batches sized for the sink. `CarBlockIterator` itself checks no hashes.
 */
export async function* verifiedCarBatches(
  bytes: AsyncIterable<Uint8Array>,
  options: { onRoot: (root: CID) => void; batchBytes?: number },
): AsyncGenerator<VerifiedBlock[]> {
  let iterator: CarBlockIterator
  try {
    iterator = await CarBlockIterator.fromIterable(bytes)
  } catch (err) {
    throw new InvalidRepoError(`repo CAR header: ${(err as Error).message}`, { cause: err })
  }
  const roots = await iterator.getRoots()
  const root = roots[0]
  if (roots.length !== 1 || !root)
    throw new InvalidRepoError(`repo CAR must have exactly one root, has ${roots.length}`)
  options.onRoot(root)
  const limit = options.batchBytes ?? 4 << 20
  let batch: VerifiedBlock[] = []
  let size = 0
  try {
    for await (const block of iterator) {
      const { cid } = block
      if (cid.version !== 1 || cid.code !== DAG_CBOR || cid.multihash.code !== SHA2_256) {
        throw new InvalidRepoError(`block ${cid} is not CIDv1 dag-cbor sha2-256`)
      }
      const digest = createHash('sha256').update(block.bytes).digest()
      if (!digest.equals(cid.multihash.digest))
        throw new InvalidRepoError(`block ${cid} does not match its bytes`)
      batch.push({ cid: cid.bytes, bytes: block.bytes })
      size += block.bytes.length
      if (size >= limit) {
        yield batch
        batch = []
        size = 0
      }
    }
  } catch (err) {
    if (err instanceof InvalidRepoError || err instanceof TransferError) throw err
    throw new InvalidRepoError(`repo CAR: ${(err as Error).message}`, { cause: err })
  }
  if (batch.length > 0) yield batch
}
