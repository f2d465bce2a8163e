/**
 * Pull-based reader over a stream of byte chunks: exact reads for headers,
 * zero-copy bounded reads for bulk data. Chunk boundaries can fall anywhere.
 */
export class ByteReader {
  private readonly iterator: AsyncIterator<Uint8Array>
  private buffered: Uint8Array = new Uint8Array(0)
  private done = false
  /** Bytes handed out so far. */
  position = 0

  constructor(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>) {
    this.iterator =
      Symbol.asyncIterator in source
        ? source[Symbol.asyncIterator]()
        : toAsync(source)[Symbol.asyncIterator]()
  }

  /** True when the source is exhausted and nothing is buffered. */
  async atEnd(): Promise<boolean> {
    return !(await this.fill())
  }

  /** Exactly `n` bytes, or `undefined` if the source ends first (with the count actually available). */
  async readExact(n: number): Promise<Uint8Array | undefined> {
    if (this.buffered.length >= n) return this.take(n)
    const parts: Uint8Array[] = []
    let have = 0
    while (have < n) {
      if (!(await this.fill())) return undefined
      const part = this.take(Math.min(n - have, this.buffered.length))
      parts.push(part)
      have += part.length
    }
    return concat(parts, n)
  }

  /** Between 1 and `max` bytes without copying, or `undefined` at the end of the source. */
  async readUpTo(max: number): Promise<Uint8Array | undefined> {
    if (!(await this.fill())) return undefined
    return this.take(Math.min(max, this.buffered.length))
  }

  /** Stops the underlying source (e.g. closes the HTTP body) when the reader is abandoned. */
  async cancel(): Promise<void> {
    this.done = true
    this.buffered = new Uint8Array(0)
    await this.iterator.return?.()
  }

  private take(n: number): Uint8Array {
    const out = this.buffered.subarray(0, n)
    this.buffered = this.buffered.subarray(n)
    this.position += n
    return out
  }

  private async fill(): Promise<boolean> {
    while (this.buffered.length === 0) {
      if (this.done) return false
      const next = await this.iterator.next()
      if (next.done) {
        this.done = true
        return false
      }
      this.buffered = next.value
    }
    return true
  }
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0]!
  const out = new Uint8Array(total)
  let offset = 0
  for (const p of parts) {
    out.set(p, offset)
    offset += p.length
  }
  return out
}

async function* toAsync(chunks: Iterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  yield* chunks
}
