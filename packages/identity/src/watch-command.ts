/**
 * `pds-identity watch`: the watcher as a command. Each round lists the DIDs (those named, and
 * every account of `--pds`), checks them against PLC, sends each new operation to the sinks and
 * saves the state; `--once` does one round and says through its exit code whether anything
 * unexpected happened, for cron.
 */
import { setTimeout as delay } from 'node:timers/promises'
import type * as plc from '@did-plc/lib'
import { type AlertSink, deliverAlert, logSink, webhookSink } from './alert-sinks.ts'
import type { CliIo } from './cli-io.ts'
import { checkIdentities, emptyWatchState, type WatchState } from './identity-watch.ts'
import { listPdsAccounts } from './pds-accounts.ts'
import { readWatchState, writeWatchState } from './watch-state-file.ts'

export interface WatchCommand {
  dids: string[]
  /** Watch every account of this PDS too (listed again each round: new accounts join). */
  pds?: string
  /** Expected signers (and the keys recovery is planned with), each with its key file if known. */
  keys: { key: string; file?: string }[]
  webhook?: string
  /** Signs each webhook POST (HMAC-SHA256, spec/recovery.md "Sinks"). */
  webhookSecret?: string
  statePath?: string
  everySeconds: number
  once: boolean
  /** The PLC directory, named in recovery commands when it is not the default. */
  plcUrl?: string
}

/** Exit codes of `--once`: nothing unexpected, an unexpected operation, some DID not checked. */
export const WATCH_EXIT = { ok: 0, unexpected: 1, unchecked: 3 } as const

/** Runs the watch; returns the exit code (`--once`), or 0 when `signal` stops the loop. */
export async function runWatch(
  cmd: WatchCommand,
  client: plc.Client,
  io: CliIo,
  deps: { now?: () => Date; signal?: AbortSignal; webhookRetryDelaysMs?: number[] } = {},
): Promise<number> {
  const sinks: AlertSink[] = [logSink(io.out)]
  if (cmd.webhook)
    sinks.push(
      webhookSink(cmd.webhook, {
        ...(deps.webhookRetryDelaysMs && { retryDelaysMs: deps.webhookRetryDelaysMs }),
        ...(cmd.webhookSecret && { secret: cmd.webhookSecret }),
      }),
    )
  let state: WatchState = cmd.statePath ? await readWatchState(cmd.statePath) : emptyWatchState()
  const signers = cmd.keys.map((k) => k.key)
  for (;;) {
    let dids = cmd.dids
    let listFailed = false
    if (cmd.pds) {
      try {
        const accounts = await listPdsAccounts(cmd.pds)
        if (accounts.other.length > 0)
          io.err(
            `${accounts.other.length} account(s) of ${cmd.pds} are not did:plc: nothing to watch at PLC\n`,
          )
        dids = [...new Set([...dids, ...accounts.plc])]
      } catch (err) {
        io.err(`cannot list the accounts of ${cmd.pds}: ${(err as Error).message}\n`)
        listFailed = true
      }
    }
    const check = await checkIdentities({
      plc: client,
      targets: dids.map((did) => ({ did, expect: { signers } })),
      state,
      ...(deps.now && { now: deps.now }),
      command: {
        keyFile: (key) => cmd.keys.find((k) => k.key === key)?.file,
        ...(cmd.plcUrl && { plcUrl: cmd.plcUrl }),
      },
    })
    for (const s of check.started)
      io.out(
        `watching ${s.did}: ${s.rotationKeys.length} rotation key(s), ${
          s.yourRank
            ? `yours at rank ${s.yourRank}`
            : signers.length
              ? 'none of them yours'
              : 'pass --key or --expect to mark yours'
        }`,
      )
    for (const alert of check.alerts)
      await deliverAlert(alert, sinks, (sink, err) =>
        io.err(`alert for ${alert.did} not sent by ${sink.name}: ${err.message}\n`),
      )
    for (const f of check.failures)
      io.err(`could not check ${f.did}: ${f.message}; trying again next round\n`)
    state = check.state
    if (cmd.statePath) await writeWatchState(cmd.statePath, state)
    if (cmd.once) {
      if (check.alerts.some((a) => !a.expected)) return WATCH_EXIT.unexpected
      return check.failures.length > 0 || listFailed ? WATCH_EXIT.unchecked : WATCH_EXIT.ok
    }
    // An abort (the caller stopping the loop) rejects the wait: the watch ends cleanly.
    const stopped = await delay(
      cmd.everySeconds * 1000,
      undefined,
      deps.signal ? { signal: deps.signal } : {},
    ).then(
      () => false,
      () => true,
    )
    if (stopped) return WATCH_EXIT.ok
  }
}
