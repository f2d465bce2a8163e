import { describe, expect, it } from 'vitest'
import type { FailureReason, InboundTransfer } from '../src/inbound-transfer.ts'
import { failedSection } from '../src/migrate-failures.ts'
import { steps } from '../src/migrate-html.ts'

const REASONS: FailureReason[] = [
  'SourceRefused',
  'SourceUnreachable',
  'NoCommonAlgorithm',
  'StreamInvalid',
  'StreamCut',
  'RepoInvalid',
  'BlobInvalid',
  'PreferencesInvalid',
  'AccountStateInvalid',
  'AccountAlreadyActive',
  'PlcOperationInvalid',
  'PlcSubmitFailed',
  'ActivationFailed',
  'NoProgress',
  'LimitExceeded',
  'Interrupted',
  'LocalStorage',
  'Cancelled',
  'PlcUnreachable',
  'Internal',
]

const failed = (reason: FailureReason, repo?: InboundTransfer['repo']) =>
  ({
    transferId: 't1',
    did: 'did:plc:abc',
    status: 'failed',
    stage: 'failed',
    failure: { reason, message: 'InvalidPlcToken (400): completeTransfer: raw text' },
    ...(repo && { repo }),
  }) as InboundTransfer

describe('/migrate failed page', () => {
  it('says every failure in plain words with a way on; the raw reason and message only under details', () => {
    for (const reason of REASONS) {
      const html = failedSection(failed(reason), 'https://pds.example')
      const [main, details] = html.split('<details>')
      expect(main, reason).toContain('The move stopped.')
      expect(main, reason).not.toContain(reason)
      expect(main, reason).not.toContain('raw text')
      expect(main, reason).toMatch(
        /<form method="post" action="https:\/\/pds.example\/migrate\/authorize">|Start a new move/,
      )
      expect(details, reason).toContain(`<code>${reason}</code>`)
    }
  })

  it('offers to continue only where what was copied is kept', () => {
    expect(failedSection(failed('SourceUnreachable'), 'https://pds.example')).toContain(
      'Sign in again and continue',
    )
    expect(failedSection(failed('RepoInvalid'), 'https://pds.example')).not.toContain('continue')
  })

  it('marks the step the move stopped at', () => {
    expect(steps(failed('StreamCut'))).toContain(
      '<li aria-current="step">✗ Copying your repository, images and settings (stopped here)</li>',
    )
    expect(steps(failed('PlcSubmitFailed', { rev: 'r', commitCid: 'c' }))).toContain(
      '✗ Moving your identity (stopped here)',
    )
  })
})
