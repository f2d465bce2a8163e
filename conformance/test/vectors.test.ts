import { describe, expect, it } from 'vitest'
import { checkVectors } from '../src/vectors/check-vectors.ts'

describe('conformance vectors', () => {
  it('this implementation passes every RFC 9180, 0014 and negative vector, and recomputes ours byte for byte', async () => {
    const results = await checkVectors()
    expect(results.filter((r) => !r.pass)).toEqual([])
    const count = (file: string) => results.filter((r) => r.file === file).length
    expect(count('rfc9180-base.json')).toBe(2)
    expect(count('transfer-vectors.json')).toBe(3)
    expect(count('negative-vectors.json')).toBeGreaterThanOrEqual(21)
  })
})
