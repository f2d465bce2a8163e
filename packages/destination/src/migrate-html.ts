import { esc, size } from './html-page.ts'
import type { InboundTransfer } from './inbound-transfer.ts'

/** The steps a page lists, each with the stages that belong to it, in order. */
export type StepTable = Array<[InboundTransfer['stage'][], string]>

const MOVE_STEPS: StepTable = [
  [['created', 'streaming', 'retrying'], 'Copying your repository, images and settings'],
  [['reconciling'], 'Checking every image is here'],
  [['awaitingPlcToken'], 'Waiting for the confirmation code from your email'],
  [['signing', 'catchingUp', 'submittingPlc', 'activating'], 'Moving your identity'],
  [['activated'], 'Done'],
]

/**
 * The step list with the current one marked (a failed transfer: the step it stopped at), for
 * screen readers too. A failure of PLC or activation stopped at the identity step; any other,
 * at copying or checking.
 */
export function steps(
  t: Pick<InboundTransfer, 'stage' | 'status' | 'failure' | 'repo'>,
  table: StepTable = MOVE_STEPS,
): string {
  const stepOf = (stage: InboundTransfer['stage']) => table.findIndex(([stages]) => stages.includes(stage))
  const failedAt =
    t.status !== 'failed'
      ? -1
      : ['PlcOperationInvalid', 'PlcSubmitFailed', 'ActivationFailed'].includes(t.failure?.reason ?? '')
        ? stepOf('submittingPlc')
        : t.repo
          ? stepOf('reconciling')
          : 0
  const current = failedAt >= 0 ? failedAt : stepOf(t.stage)
  const items = table.map(([, label], i) => {
    // The last step is reached only when everything is done: it is a check, not "in progress".
    const last = i === table.length - 1
    const mark =
      i === failedAt ? '✗ ' : i < current || (last && i === current) ? '✓ ' : i === current ? '→ ' : ''
    const stopped = i === failedAt ? ' (stopped here)' : ''
    return `<li${i === current ? ' aria-current="step"' : ''}>${mark}${esc(label)}${stopped}</li>`
  })
  return `<ol>${items.join('')}</ol>`
}

/** Counters of a transfer as a definition list; protocol details folded away. */
export function counters(t: InboundTransfer): string {
  const p = t.progress
  return `<dl>
<dt>Data received</dt><dd data-field="bytes">${received(p.bytesReceived, t.expected?.bytes)}</dd>
<dt>Images and files received</dt><dd data-field="blobs">${p.blobsReceived + p.blobsReconciled}${t.expected?.blobs ? ` of ${t.expected.blobs}` : ''}</dd>
<dt>Records</dt><dd data-field="records">${p.records}</dd>${
    t.copyUrl
      ? `
<dt>Posts and images read from</dt><dd>your backup at ${esc(t.copyUrl)}; what changed since comes from your current server</dd>`
      : ''
  }
</dl>
<details><summary>Technical details</summary><dl>
<dt>Encrypted frames received</dt><dd data-field="frames">${p.framesReceived}</dd>
<dt>Transfer ID</dt><dd><code>${esc(t.transferId)}</code></dd>
</dl></details>`
}

/** The live part of the progress page (refreshed in place by its script): bar, pace, counters. */
export function liveProgress(t: InboundTransfer, now: number = Date.now()): string {
  const timing = pace(t, now)
  return `${progressBar(t)}
${timing ? `<p data-field="pace">${esc(timing)}</p>` : ''}
${counters(t)}`
}

/** "3.2 MiB", or "3.2 MiB of about 10.0 MiB (32%)" when the source gave a size hint. */
export function received(bytes: number, expected?: number): string {
  if (!expected) return size(bytes)
  return `${size(bytes)} of about ${size(expected)} (${percent(bytes, expected)}%)`
}

/**
 * Speed and time left from the average since the transfer started ("2.3 MiB/s, about 4
 * minutes left"); empty while there is too little to go on.
 */
export function pace(t: InboundTransfer, now: number): string {
  const seconds = (now - t.createdAt) / 1000
  const bytes = t.progress.bytesReceived
  if (seconds < 2 || bytes === 0) return ''
  const perSecond = bytes / seconds
  const speed = `${size(perSecond)}/s`
  const total = t.expected?.bytes
  if (!total || bytes >= total) return speed
  const left = (total - bytes) / perSecond
  const wait =
    left < 60
      ? 'less than a minute left'
      : left < 3600
        ? `about ${Math.round(left / 60)} minutes left`
        : `about ${Math.floor(left / 3600)} h ${Math.round((left % 3600) / 60)} min left`
  return `${speed}, ${wait}`
}

/** The transfer's progress bar: determinate when the source gave a size hint, else indeterminate. */
export function progressBar(t: InboundTransfer): string {
  const total = t.expected?.bytes
  if (!total) return '<progress aria-label="Transfer progress"></progress>'
  const value = Math.min(t.progress.bytesReceived, total)
  return `<progress aria-label="Transfer progress" data-field="bar" max="${total}" value="${value}">${percent(value, total)}%</progress>`
}

/** Whole percent, never 100 before the end (the hint leaves small frames out). */
function percent(bytes: number, expected: number): number {
  return Math.min(99, Math.floor((100 * bytes) / expected))
}
