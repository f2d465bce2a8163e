import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { coalesceChunks } from '../src/coalesce-chunks.ts'

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = []
  // Copied as they come: a consumer may keep what it was given.
  for await (const c of chunks) out.push(c.slice())
  return out
}

describe('coalesceChunks', () => {
  it('keeps the bytes and their order, in at most two chunks per `min` bytes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 60 }),
        fc.integer({ min: 1, max: 512 }),
        async (chunks, min) => {
          const out = await collect(coalesceChunks(chunks, min))
          expect(Buffer.concat(out)).toEqual(Buffer.concat(chunks))
          for (const c of out.slice(0, -1)) expect(c.length).toBeGreaterThan(0)
          // Pending bytes are sent early only when the next chunk would overflow them, so any
          // two neighbours hold more than `min` bytes together.
          out.forEach((c, i) => {
            const next = out[i + 1]
            if (next) expect(c.length + next.length).toBeGreaterThan(min)
          })
        },
      ),
    )
  })

  it('passes large chunks through without copying', async () => {
    const big = new Uint8Array(100).fill(1)
    const out: Uint8Array[] = []
    for await (const c of coalesceChunks([Uint8Array.of(1, 2), big, big], 64)) out.push(c)
    expect(out[1]).toBe(big)
    expect(out[2]).toBe(big)
    expect(Array.from(out[0] as Uint8Array)).toEqual([1, 2])
  })
})
