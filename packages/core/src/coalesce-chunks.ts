/**
 * Re-chunks a byte stream: small chunks are copied together into buffers of up to `min` bytes
 * (any two neighbouring output chunks hold more than `min` bytes), chunks of `min` bytes or more
 * pass through untouched, the order of the bytes is kept. A repo CAR
 * streamed block by block arrives as hundreds of thousands of ~100-byte pieces; encrypting,
 * writing or parsing each one alone costs a native call, a new ArrayBuffer and several promises
 * per piece, which made record-heavy transfers CPU-bound and filled the heap with garbage.
 */
export async function* coalesceChunks(
  chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  min = 64 * 1024,
): AsyncGenerator<Uint8Array> {
  let pending: Uint8Array | undefined
  let filled = 0
  for await (const chunk of chunks) {
    if (chunk.length === 0) continue
    if (filled === 0 && chunk.length >= min) {
      yield chunk
      continue
    }
    if (filled + chunk.length > min) {
      // Would overflow: send what is pending, then this chunk on its own if it is large.
      if (filled > 0) {
        yield (pending as Uint8Array).subarray(0, filled)
        pending = undefined
        filled = 0
      }
      if (chunk.length >= min) {
        yield chunk
        continue
      }
    }
    // A fresh buffer each time: the one just yielded may still be in use downstream.
    pending ??= new Uint8Array(min)
    pending.set(chunk, filled)
    filled += chunk.length
  }
  if (filled > 0) yield (pending as Uint8Array).subarray(0, filled)
}
