/**
 * Where the watcher's alerts go: a log line, a webhook (JSON, retried), an email through the
 * PDS's own mailer, or anything else with `send`. A sink that fails is reported to the caller
 * (`deliverAlert`'s `onFailure`), never allowed to stop the watch: the next identity and the next
 * round must still be checked.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import type { IdentityAlert } from './identity-watch.ts'

/** Anything that can tell a person about an alert (an email sink is a PDS's mailer behind this). */
export interface AlertSink {
  /** A short name for failure reports (e.g. `webhook https://…`). */
  readonly name: string
  send(alert: IdentityAlert): Promise<void>
}

/** The webhook's JSON body, version 1 (spec/recovery.md, "Watcher"). */
export interface WebhookBody {
  type: 'pds-identity.alert'
  version: 1
  /** The alert as text (what the log sink prints): chat webhooks show `text` as it is. */
  text: string
  alert: IdentityAlert
}

/** The alert as lines a person reads: what happened, whether it was expected, and what to do by when. */
export function formatAlert(alert: IdentityAlert): string {
  const when = alert.msLeft > 0 ? `${formatDuration(alert.msLeft)} left` : 'the window has closed'
  const lines = [
    `${alert.did}: new PLC operation ${alert.cid} at ${alert.createdAt}: ${alert.expected ? 'expected' : 'NOT EXPECTED'}`,
    `  signed by ${alert.signedBy ?? 'no valid key'}${alert.signerRank ? ` (rank ${alert.signerRank} before it)` : ''}${
      alert.signedByExpectedKey === null
        ? ''
        : alert.signedByExpectedKey
          ? ', one of your keys'
          : ', not yours'
    }`,
    ...alert.changes.map((c) => `  changed: ${c}`),
    ...alert.problems.map((p) => `  problem: ${p}`),
    `  undo window: until ${alert.deadline} (${when})`,
  ]
  if (alert.nullified) lines.push('  it has since been undone')
  const r = alert.recovery
  if (r?.possible) {
    lines.push(`  to undo it with ${r.key} before ${alert.deadline}:`, `    ${r.command}`)
    for (const [placeholder, meaning] of Object.entries(r.placeholders))
      lines.push(`    replace ${placeholder} with ${meaning}`)
  } else if (r)
    lines.push(`  cannot be undone with ${r.key} (${r.reason}): ${r.message}`, `  what you can do: ${r.next}`)
  else if (!alert.expected && !alert.nullified)
    lines.push('  give your rotation key (--key FILE or --expect DID_KEY) to learn whether you can undo it')
  return lines.join('\n')
}

function formatDuration(ms: number): string {
  const minutes = Math.floor(ms / 60_000)
  return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, '0')}m`
}

/** Each alert as text through `write` (stdout, a logger). */
export function logSink(write: (text: string) => void): AlertSink {
  return {
    name: 'log',
    send: async (alert) => write(formatAlert(alert)),
  }
}

/** The header that carries a webhook's signature when the sink has a secret. */
export const WEBHOOK_SIGNATURE_HEADER = 'x-pds-identity-signature'

/**
 * The signature header's value: `t=<unix seconds>,sha256=<hex HMAC-SHA256 of "<t>.<body>">`.
 * The time is inside the MAC so that a captured alert cannot be replayed later as a new one.
 */
export function signWebhookBody(secret: string, body: string, now: Date = new Date()): string {
  const t = Math.floor(now.getTime() / 1000)
  return `t=${t},sha256=${webhookMac(secret, t, body)}`
}

/** Why a receiver refuses a webhook (`verifyWebhookSignature`). */
export type WebhookSignatureProblem = 'missing' | 'malformed' | 'mismatch' | 'stale'

/**
 * For a webhook's receiver: null when `header` signs exactly `body` with `secret` within
 * `toleranceSeconds` (default 300) of `now`, else why not. Compares in constant time.
 */
export function verifyWebhookSignature(
  secret: string,
  header: string | undefined,
  body: string,
  options: { now?: Date; toleranceSeconds?: number } = {},
): WebhookSignatureProblem | null {
  if (!header) return 'missing'
  const m = /^t=(\d+),sha256=([0-9a-f]{64})$/.exec(header.trim())
  if (!m?.[1] || !m[2]) return 'malformed'
  const t = Number(m[1])
  const expected = Buffer.from(webhookMac(secret, t, body), 'hex')
  if (!timingSafeEqual(expected, Buffer.from(m[2], 'hex'))) return 'mismatch'
  const now = Math.floor((options.now ?? new Date()).getTime() / 1000)
  return Math.abs(now - t) > (options.toleranceSeconds ?? 300) ? 'stale' : null
}

function webhookMac(secret: string, t: number, body: string): string {
  return createHmac('sha256', secret).update(`${t}.${body}`).digest('hex')
}

/**
 * POSTs `WebhookBody` as JSON to `url`; a refused or unanswered request is tried again after
 * each of `retryDelaysMs` (default 1 s, 5 s, 30 s), then the failure is thrown to `deliverAlert`.
 * With `secret`, each attempt is signed afresh (`WEBHOOK_SIGNATURE_HEADER`), so a receiver can
 * tell our alerts from anyone's POST to its URL.
 */
export function webhookSink(
  url: string,
  options: { retryDelaysMs?: number[]; timeoutMs?: number; fetch?: typeof fetch; secret?: string } = {},
): AlertSink {
  const doFetch = options.fetch ?? fetch
  const delays = options.retryDelaysMs ?? [1000, 5000, 30_000]
  return {
    name: `webhook ${url}`,
    async send(alert) {
      const body = JSON.stringify({
        type: 'pds-identity.alert',
        version: 1,
        text: formatAlert(alert),
        alert,
      } satisfies WebhookBody)
      let failure = ''
      for (let attempt = 0; attempt <= delays.length; attempt++) {
        if (attempt > 0) await new Promise((r) => setTimeout(r, delays[attempt - 1]))
        const headers: Record<string, string> = { 'content-type': 'application/json' }
        if (options.secret) headers[WEBHOOK_SIGNATURE_HEADER] = signWebhookBody(options.secret, body)
        try {
          const res = await doFetch(url, {
            method: 'POST',
            headers,
            body,
            signal: AbortSignal.timeout(options.timeoutMs ?? 10_000),
          })
          await res.body?.cancel()
          if (res.ok) return
          failure = `answered ${res.status}`
        } catch (err) {
          failure = (err as Error).message
        }
      }
      throw new Error(`${url} ${failure} after ${delays.length + 1} attempts`)
    },
  }
}

/** Sends `alert` to every sink; one that fails is reported through `onFailure` and the rest still get it. */
export async function deliverAlert(
  alert: IdentityAlert,
  sinks: AlertSink[],
  onFailure: (sink: AlertSink, err: Error) => void,
): Promise<void> {
  await Promise.all(
    sinks.map((sink) => sink.send(alert).catch((err: unknown) => onFailure(sink, err as Error))),
  )
}
