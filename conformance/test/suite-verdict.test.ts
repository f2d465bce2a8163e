import { describe, expect, it } from 'vitest'
import { CheckFailed, type DestinationStatus, verdict } from '../src/suite/index.ts'

/**
 * The suite's verdict wait, as an implementer running it in CI meets it: a destination that is
 * still retrying a cut stream when the wait ends gets a failure that says what to change, not a
 * bare "no verdict".
 */
describe('verdict()', () => {
  const answering = (status: DestinationStatus) => ({
    verdictTimeoutMs: 250,
    status: async () => status,
  })

  it('names the way on when the destination is still retrying the stream', async () => {
    const failed = await verdict(answering({ status: 'importing', stage: 'retrying' }), 't1').catch((e) => e)
    expect(failed).toBeInstanceOf(CheckFailed)
    expect(failed.message).toMatch(/^no verdict within 250 ms; last status .*"retrying"/)
    expect(failed.message).toContain('give its test deployment fewer retries, or pass a longer --timeout')
  })

  it('says only what it saw when the destination is simply slow', async () => {
    const failed = await verdict(answering({ status: 'importing', stage: 'streaming' }), 't2').catch((e) => e)
    expect(failed).toBeInstanceOf(CheckFailed)
    expect(failed.message).not.toContain('--timeout')
  })

  it('returns the verdict as soon as there is one', async () => {
    await expect(verdict(answering({ status: 'failed', stage: 'failed' }), 't3')).resolves.toMatchObject({
      accepted: false,
    })
    await expect(
      verdict(answering({ status: 'importing', stage: 'awaitingPlcToken' }), 't4'),
    ).resolves.toMatchObject({ accepted: true })
  })
})
