import { esc } from './html-page.ts'
import type { FailureReason, InboundTransfer } from './inbound-transfer.ts'
import { RESUMABLE } from './transfer-failure.ts'

/** A failure as the person moving their account is told it: what happened, whose it is, what to do. */
interface Explained {
  happened: string
  next: string
}

/**
 * Every failure reason in plain words (the compiler checks that none is left out). The reason's
 * name and the technical message stay available under "Technical details", for support.
 */
const EXPLAINED: Record<FailureReason, Explained> = {
  SourceRefused: {
    happened: 'Your current server refused a step of the move.',
    next: 'Sign in again and retry; if it refuses again, your current server’s operator can tell why (the details below help).',
  },
  SourceUnreachable: {
    happened:
      'Your current server stopped answering for longer than this server waits (it may be restarting).',
    next: 'Try again in a few minutes: what was already copied is kept.',
  },
  NoCommonAlgorithm: {
    happened: 'Your current server and this one have no encryption method in common.',
    next: 'This cannot be fixed from here: ask either server’s operator, or use a client-side migration tool.',
  },
  StreamInvalid: {
    happened: 'Data from your current server arrived damaged or out of order, and was not kept.',
    next: 'Try again; if it happens again, the connection or your current server is faulty.',
  },
  StreamCut: {
    happened: 'The connection to your current server broke while copying.',
    next: 'Try again: what was already copied is kept.',
  },
  RepoInvalid: {
    happened:
      'Your current server sent a copy of your posts and records that does not pass verification, so it was not kept.',
    next: 'This is a fault at your current server: report it to its operator. Nothing moved.',
  },
  BlobInvalid: {
    happened:
      'Your current server sent an image or file whose contents do not match what your posts refer to.',
    next: 'This is a fault at your current server: report it to its operator. Nothing moved.',
  },
  PreferencesInvalid: {
    happened: 'Your current server sent settings this server cannot read.',
    next: 'This is a fault at your current server: report it to its operator. Nothing moved.',
  },
  AccountStateInvalid: {
    happened:
      'Your current server sent account details (such as your email) in a form this server cannot read.',
    next: 'This is a fault at your current server: report it to its operator. Nothing moved.',
  },
  AccountAlreadyActive: {
    happened: 'This account is already active on this server.',
    next: 'Nothing to move: sign in to your apps with this server.',
  },
  PlcOperationInvalid: {
    happened:
      'Your current server signed an identity change that is not the one asked for (for example one that drops your own rotation key), so it was not sent.',
    next: 'Your identity did not change. Report this to your current server’s operator before trying again.',
  },
  PlcSubmitFailed: {
    happened:
      'The identity directory refused the move (your current server may have taken the account back after waiting too long).',
    next: 'Your account stays at your current server. Start the move again.',
  },
  ActivationFailed: {
    happened: 'Your identity now points here, but this server could not switch your account on.',
    next: 'Enter your code again to retry the last step; nothing is lost.',
  },
  NoProgress: {
    happened: 'Copying stalled: nothing arrived for too long.',
    next: 'Try again: what was already copied is kept.',
  },
  LimitExceeded: {
    happened: 'This server is busy with other moves, or this account is larger than it accepts.',
    next: 'Try again later.',
  },
  Interrupted: {
    happened: 'This server restarted during the move and lost its sign-in at your current server.',
    next: 'Sign in again: the move continues from what was copied.',
  },
  PlcUnreachable: {
    happened:
      'The identity directory did not answer while your move was being recorded there. Your move is signed and kept.',
    next: 'Press “Finish the move” in a few minutes; nothing needs to be entered again.',
  },
  BlobsMissing: {
    happened:
      'Some images or videos your posts use could not be fetched from your current server while the last changes were brought over.',
    next: 'The list below says which posts; fetch them again, or move without them. Your current server keeps your account paused until you decide (at most an hour).',
  },
  Internal: {
    happened: 'This server hit an error it did not expect.',
    next: 'Nothing moved. Try again later; if it happens again, tell this server’s operator (the details below help).',
  },
  Cancelled: {
    happened: 'You cancelled this move.',
    next: 'Nothing moved and nothing changed at your current server. Start a new move whenever you like.',
  },
  LocalStorage: {
    happened: 'This server ran out of disk space (or its disk failed) while storing your data.',
    next: 'Nothing moved. Try again once the operator of this server has freed space; what was copied is kept.',
  },
}

/** A completion step that stopped with its inputs kept (PLC did not answer, activation failed): the way on. */
export function stalledSection(t: InboundTransfer): string {
  if (!t.failure) return ''
  const { happened, next } = EXPLAINED[t.failure.reason]
  return `<p class="warn" role="alert">${esc(happened)} ${esc(next)}</p>
<form method="post" action="/migrate/transfer/${esc(t.transferId)}/complete">
<button type="submit">Finish the move</button>
</form>`
}

/** The failed page's body: plain words, the way on, and the technical details folded away. */
export function failedSection(t: InboundTransfer, origin: string): string {
  const failure = t.failure ?? { reason: 'Interrupted' as const, message: 'unknown' }
  const { happened, next } = EXPLAINED[failure.reason]
  const identityMoved = failure.reason === 'ActivationFailed'
  const action = RESUMABLE.has(failure.reason)
    ? `<form method="post" action="${esc(origin)}/migrate/authorize"><input type="hidden" name="did" value="${esc(t.did)}">
<button type="submit">Sign in again and continue</button></form>`
    : `<p><a href="${esc(origin)}/migrate">Start a new move</a></p>`
  return `<p class="error" role="alert"><strong>The move stopped.</strong> ${esc(happened)}</p>
<p>${esc(next)}</p>
${identityMoved ? '' : '<p>Your account is still at your current server, as before.</p>'}
${action}
<details><summary>Technical details</summary><dl>
<dt>Reason</dt><dd><code>${esc(failure.reason)}</code></dd>
<dt>Message</dt><dd>${esc(failure.message)}</dd>
<dt>Transfer ID</dt><dd><code>${esc(t.transferId)}</code></dd>
</dl></details>`
}
