import { describe, expect, it } from 'vitest'
import { requestedDelayMs, TransientSourceError, withRetries } from '../src/sync-retry.ts'

describe('requestedDelayMs', () => {
  const now = Date.parse('2026-12-02T12:00:00Z')
  const delay = (headers: Record<string, string>) => requestedDelayMs(new Headers(headers), now)

  it('reads Retry-After as seconds or as an HTTP date', () => {
    expect(delay({ 'retry-after': '3' })).toBe(3000)
    expect(delay({ 'retry-after': 'Wed, 02 Dec 2026 12:00:05 GMT' })).toBe(5000)
    expect(delay({ 'retry-after': 'Wed, 02 Dec 2026 11:00:00 GMT' })).toBe(0)
  })

  it('reads RateLimit-Reset as epoch seconds (the reference PDS) or as seconds from now (the IETF draft)', () => {
    expect(delay({ 'ratelimit-reset': String(now / 1000 + 7) })).toBe(7000)
    expect(delay({ 'ratelimit-reset': '7' })).toBe(7000)
  })

  it('prefers Retry-After, and says nothing without either', () => {
    expect(delay({ 'retry-after': '1', 'ratelimit-reset': '9' })).toBe(1000)
    expect(delay({ 'retry-after': 'soon' })).toBeUndefined()
    expect(delay({})).toBeUndefined()
  })
})

describe('withRetries', () => {
  const retry = { attempts: 3, baseDelayMs: 1 }

  it('retries transient failures up to the attempts, then throws the last', async () => {
    let calls = 0
    const failing = () => {
      calls++
      return Promise.reject(new TransientSourceError('cut', 'cut'))
    }
    await expect(withRetries(retry, failing)).rejects.toThrow('cut')
    expect(calls).toBe(3)
  })

  it('does not retry anything else', async () => {
    let calls = 0
    const failing = () => {
      calls++
      return Promise.reject(new Error('a bug'))
    }
    await expect(withRetries(retry, failing)).rejects.toThrow('a bug')
    expect(calls).toBe(1)
  })

  it('refuses a wait longer than a quarter of an hour instead of hanging', async () => {
    const waits: number[] = []
    const limited = () => Promise.reject(new TransientSourceError('429', 'status', 3_600_000))
    await expect(
      withRetries(retry, limited, async ({ delayMs }) => {
        waits.push(delayMs)
      }),
    ).rejects.toThrow(
      /^429: the source asks to wait 3600 s \(until .+\), longer than the 15 min a pull waits/,
    )
    expect(waits).toEqual([])
  })
})
