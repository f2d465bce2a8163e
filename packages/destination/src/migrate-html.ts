import { esc, size } from './html-page.ts'
import type { InboundTransfer } from './inbound-transfer.ts'
import { duration, type SizeEstimate } from './migrate-size-estimate.ts'

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

/** Whether the copy is still under way (after it, a hint's "of about" would read as missing data). */
export function copying(t: InboundTransfer): boolean {
  return ['created', 'streaming', 'retrying', 'reconciling'].includes(t.stage)
}

/** Counters of a transfer as a definition list; protocol details folded away. */
export function counters(t: InboundTransfer, estimate?: SizeEstimate): string {
  const p = t.progress
  const blobs = p.blobsReceived + p.blobsReconciled
  // Of the size hint's count (v1), else of the checklist's (while it still holds).
  const ofBlobs = t.expected?.blobs
    ? ` of ${t.expected.blobs}`
    : estimate && estimate.blobs >= blobs && estimate.blobs > 0
      ? ` of ${estimate.allListed ? '' : 'at least '}${estimate.blobs}`
      : ''
  return `<dl>
<dt>Data received</dt><dd data-field="bytes">${received(p.bytesReceived, copying(t) ? t.expected?.bytes : undefined)}</dd>
<dt>Images and files received</dt><dd data-field="blobs">${blobs}${ofBlobs}</dd>
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

/**
 * The live part of the progress page (refreshed in place by its script): bar, pace, counters.
 * `estimate` is the checklist's count of images and files, for a source that gives no size hint;
 * `since` where the pace is measured from (default: the transfer's start).
 */
export function liveProgress(
  t: InboundTransfer,
  now: number = Date.now(),
  estimate?: SizeEstimate,
  since?: PaceSample,
): string {
  const timing = pace(t, now, estimate, since)
  return `${progressBar(t, estimate)}
${timing ? `<p data-field="pace">${esc(timing)}</p>` : ''}
${counters(t, estimate)}`
}

/** A point the pace is measured from: when, and what had arrived by then. */
export interface PaceSample {
  at: number
  bytes: number
  blobs: number
}

/** What has arrived now, as a pace sample. */
export function sampleOf(t: InboundTransfer, now: number): PaceSample {
  return {
    at: now,
    bytes: t.progress.bytesReceived,
    blobs: t.progress.blobsReceived + t.progress.blobsReconciled,
  }
}

/**
 * "3.2 MiB", or "3.2 MiB of about 10.0 MiB (32%)" when the source gave a size hint. The hint
 * leaves small frames out, so more than it said means the end is near (not "of about" a
 * smaller number, which reads as wrong).
 */
export function received(bytes: number, expected?: number): string {
  if (!expected) return size(bytes)
  if (bytes > expected) return `${size(bytes)} (nearly done)`
  return `${size(bytes)} of about ${size(expected)} (${percent(bytes, expected)}%)`
}

/**
 * How far the copy is: by bytes of the size hint (v1), else by the images and files the
 * checklist counted (plain and draft sources, whose size is known only so far); undefined when
 * neither is known, or more images arrived than were counted (the account changed since).
 */
export function share(
  t: InboundTransfer,
  estimate?: SizeEstimate,
): { done: number; total: number; of: 'bytes' | 'blobs' } | undefined {
  const total = t.expected?.bytes
  if (total) return { done: Math.min(t.progress.bytesReceived, total), total, of: 'bytes' }
  if (!estimate?.allListed || estimate.blobs === 0) return undefined
  const done = t.progress.blobsReceived + t.progress.blobsReconciled
  return done > estimate.blobs ? undefined : { done, total: estimate.blobs, of: 'blobs' }
}

/**
 * Speed and time left from the average since `since` ("2.3 MiB/s, about 4 minutes left"):
 * by default the transfer's start, but a move resumed after a pause is measured from a sample
 * taken after it (else the pause would count as slowness). Empty while there is too little to
 * go on.
 */
export function pace(
  t: InboundTransfer,
  now: number,
  estimate?: SizeEstimate,
  since: PaceSample = { at: t.createdAt, bytes: 0, blobs: 0 },
): string {
  const seconds = (now - since.at) / 1000
  const bytes = t.progress.bytesReceived - since.bytes
  if (seconds < 2 || bytes <= 0) return ''
  const speed = `${size(bytes / seconds)}/s`
  const part = share(t, estimate)
  if (!part || part.done >= part.total) return speed
  const gained = part.done - (part.of === 'bytes' ? since.bytes : since.blobs)
  if (gained <= 0) return speed
  const left = ((part.total - part.done) * seconds) / gained
  return `${speed}, ${duration(left)} left`
}

/** The transfer's progress bar: determinate when its share is known (`share`), else indeterminate. */
export function progressBar(t: InboundTransfer, estimate?: SizeEstimate): string {
  const part = share(t, estimate)
  if (!part) return '<progress aria-label="Transfer progress"></progress>'
  const label = part.of === 'bytes' ? 'Transfer progress' : 'Images and files copied'
  return `<progress aria-label="${label}" data-field="bar" max="${part.total}" value="${part.done}">${percent(part.done, part.total)}%</progress>`
}

/** Whole percent, never 100 before the end (the hint leaves small frames out). */
function percent(bytes: number, expected: number): number {
  return Math.min(99, Math.floor((100 * bytes) / expected))
}
