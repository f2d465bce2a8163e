import { describe, expect, it } from 'vitest'
import { toFailure } from '../src/transfer-failure.ts'

const coded = (message: string, code: string) => Object.assign(new Error(message), { code })

describe('failures name their cause', () => {
  it('a connection that failed or was cut is the source being unreachable', () => {
    expect(toFailure(new TypeError('fetch failed', { cause: coded('connect', 'ECONNREFUSED') })).reason).toBe(
      'SourceUnreachable',
    )
    expect(toFailure(new TypeError('terminated')).reason).toBe('SourceUnreachable')
    expect(toFailure(coded('socket hang up', 'ECONNRESET')).reason).toBe('SourceUnreachable')
    expect(toFailure(new DOMException('timed out', 'TimeoutError')).reason).toBe('SourceUnreachable')
  })

  it("this server's disk is LocalStorage, an expired sign-in is SourceRefused, anything else is Internal", () => {
    expect(toFailure(coded('no space left on device', 'ENOSPC')).reason).toBe('LocalStorage')
    const refresh = Object.assign(new Error('refresh token revoked'), { name: 'TokenRefreshError' })
    expect(toFailure(refresh)).toMatchObject({
      reason: 'SourceRefused',
      message: expect.stringContaining('sign in again'),
    })
    expect(toFailure(new Error('undefined is not a function'))).toMatchObject({
      reason: 'Internal',
      message: expect.stringContaining('did not expect'),
    })
  })
})
