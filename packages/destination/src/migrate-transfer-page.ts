import type { BlobUse } from './account-sink.ts'
import { esc, page } from './html-page.ts'
import type { InboundTransfer } from './inbound-transfer.ts'
import { failedSection, stalledSection } from './migrate-failures.ts'
import { counters, liveProgress, type PaceSample, steps } from './migrate-html.ts'
import { passwordFields, signInSection } from './migrate-password.ts'
import type { SizeEstimate } from './migrate-size-estimate.ts'
import { keygenSection } from './rotation-keygen.ts'
import { COMPLETION_STAGES } from './transfer-completion.ts'

/**
 * The page of one transfer in /migrate, rendered from its record (migrate-plugin.ts serves it):
 * the progress while it copies, the code step, a completion that stalled, the result, or the
 * failure, each with its next action. Pure rendering: no I/O.
 */

/** What a transfer page shows besides the transfer itself: the outcome of the last form post. */
export interface PageExtra {
  error?: string
  notice?: string
  resetSent?: boolean
  /** What the user typed, shown again. */
  typed?: { token: string; rotationKey: string }
  /** The field the error is about: shown next to it, marked invalid and focused. */
  invalid?: 'token' | 'rotationKey' | 'password'
  /** The account lists a rotation key besides its server's (else the key section opens itself). */
  holdsOwnKey?: boolean
  /** The records that use the blobs still missing. */
  missingUses?: BlobUse[]
  /** The checklist's count of images and files (a source without a size hint). */
  estimate?: SizeEstimate
  /** Where the pace is measured from (`PaceWindow`; default the transfer's start). */
  since?: PaceSample
}

/** The live page of one transfer: progress while it runs, the token form, or the result. */
export function transferPage(
  t: InboundTransfer,
  view: { origin: string; host: string; canSetPassword: boolean; keysPath?: string },
  extra: PageExtra,
): string {
  const { host, canSetPassword } = view
  const { notice, resetSent, typed, invalid } = extra
  // An error about one field is shown at that field; any other at the top.
  const error = invalid ? undefined : extra.error
  const fieldError = (field: NonNullable<PageExtra['invalid']>) =>
    invalid === field ? `<p class="error" role="alert" id="${field}-error">${esc(extra.error)}</p>` : ''
  const fieldState = (field: NonNullable<PageExtra['invalid']>) =>
    invalid === field ? ` aria-invalid="true" aria-describedby="${field}-error" autofocus` : ''
  const running = t.status !== 'failed' && t.status !== 'completed' && t.stage !== 'awaitingPlcToken'
  const alert = error
    ? `<p class="error" role="alert">${esc(error)}</p>`
    : notice
      ? `<p class="ok" role="status">${esc(notice)}</p>`
      : ''
  let body: string
  if (t.status === 'completed') {
    const old =
      t.sourceLeftActive !== undefined
        ? `<p class="warn" role="alert">Your old server did not accept the request to deactivate your account there (${esc(t.sourceLeftActive)}). Sign in there and deactivate it yourself (in the Bluesky app: Settings, Account, Deactivate account), so that nothing is posted to the old copy by mistake.</p>`
        : t.dialect === 'plain' || t.dialect === 'draft'
          ? '<p>Your account at your old server is deactivated; that server decides how long it keeps the copy.</p>'
          : '<p>Your old server keeps a deactivated copy for 30 days.</p>'
    body = `<p class="ok" role="status">Your account now lives here.</p>
${old}
${signInSection(t, host, resetSent)}
${rotationKeysSection(t, view.keysPath)}
<p>For the next 72 hours this server watches your identity log and will warn you if anything moves it away.</p>
${t.rollback ? `<p class="error" role="alert">${esc(t.rollback.message)}</p>` : ''}`
  } else if (t.status === 'failed') {
    body = failedSection(t, view.origin)
  } else if (t.stage === 'awaitingPlcToken') {
    const missing = t.missingBlobs.length
    // A finishing attempt that came back here (spec/completion.md, C8): say why, and what to do,
    // also to a user who left the page and came back.
    const lastAttempt =
      t.failure && !extra.error
        ? `<p class="warn" role="alert">Your last attempt to finish the move did not complete (${esc(t.failure.reason)}): ${esc(t.failure.message.replace(/\.$/, ''))}.
Nothing has moved yet: your identity still points to your current server. Enter your code again, or have a new one emailed.</p>`
        : ''
    body = `${lastAttempt}<p class="ok" role="status">${missing > 0 ? 'Everything your current server still has' : t.notMoved?.length ? 'Everything your current server gave' : 'Everything'} has been copied and verified${
      t.endOfStream === 'unverified'
        ? ' (your old server cannot confirm the end of the stream, so every image was checked one by one)'
        : ''
    }.</p>
${counters(t)}
${t.dialect === 'draft' ? draftHandedOver(t) : ''}
${missing > 0 ? missingReport(t, extra.missingUses ?? []) : ''}
${notMovedReport(t)}
<form method="post" action="/migrate/transfer/${esc(t.transferId)}/complete">
<p>${codeAsked(t)} Entering it lets your identity move here.
Codes are usually valid for 15 minutes; if yours has expired, have a new one emailed below.</p>
<label for="token">Confirmation code</label>
${fieldError('token')}<input type="text" id="token" name="token" required autocomplete="one-time-code" value="${esc(typed?.token ?? '')}"${fieldState('token')}>
<details id="rotation-key"${typed?.rotationKey || invalid === 'rotationKey' || !extra.holdsOwnKey ? ' open' : ''}>
<summary>Add a rotation key of your own (recommended)</summary>
<p>A rotation key you hold outranks every server's: with it you can undo any change to your identity for 72 hours,
even one made by a server. Paste the public key (<code>did:key:z…</code>) of a key pair whose private key you keep safe,
for example one made with <code>goat key generate</code>. It is placed first; your existing keys keep their order.</p>
${keygenSection(t.did)}
<label for="rotationKey">Your public rotation key</label>
${fieldError('rotationKey')}<input type="text" id="rotationKey" name="rotationKey" autocomplete="off" spellcheck="false" placeholder="did:key:zQ3sh…" value="${esc(typed?.rotationKey ?? '')}"${fieldState('rotationKey')}>
</details>
${missing > 0 ? '<label><input type="checkbox" name="acceptMissingBlobs" value="yes"> Move anyway, without the missing files</label>' : ''}
${canSetPassword ? `${fieldError('password')}${passwordFields(host, fieldState('password'))}` : ''}
<button type="submit">Move my account</button>
</form>
<form method="post" action="/migrate/transfer/${esc(t.transferId)}/resend-token">
<p>No email, or the code expired?</p>
<button type="submit">Email me a new code</button>
</form>
${cancelForm(t)}`
  } else {
    body = `<div aria-live="polite" id="live">${liveProgress(t, Date.now(), extra.estimate, extra.since)}</div>
<p>You can close this page: the move goes on without it. To come back, open
<a href="/migrate">${esc(view.host)}/migrate</a> and sign in with your handle again.</p>
${t.retry && t.stage === 'retrying' ? `<p class="warn" role="status">The connection broke (${esc(t.retry.lastFailure.reason)}); continuing where it stopped (attempt ${t.retry.attempt + 1} of ${t.retry.of}).</p>` : ''}
${t.stage === 'catchingUp' ? '<p class="ok" role="status">Your account was still changing (new posts or other activity from your apps). Your current server has paused it; the last changes are being brought over, then the move finishes. Nothing to do.</p>' : ''}
${COMPLETION_STAGES.has(t.stage) ? stalledSection(t) : cancelForm(t)}
<script>
(() => {
  // The server renders the numbers (one formatting, in migrate-html.ts); this only swaps them in.
  const poll = async () => {
    const res = await fetch(${JSON.stringify(`/migrate/transfer/${t.transferId}/live`)});
    const s = await res.json();
    if (s.stage !== ${JSON.stringify(t.stage)} || s.status !== ${JSON.stringify(t.status)}) return location.reload();
    document.getElementById('live').innerHTML = s.html;
    setTimeout(poll, 1000);
  };
  setTimeout(poll, 1000);
})();
</script>`
  }
  return page(
    t.status === 'completed' ? 'Moved' : 'Moving your account',
    `${steps(t)}\n${alert}\n${body}`,
    running ? { refreshSeconds: 2 } : {},
  )
}

/**
 * The account's rotation keys after the move, in priority order, and what the first one is for.
 * This server's key is the last (`moveRotationKeys`; the old server removed its own), so a list
 * of one holds no key of the person's: then the way to make one is offered (`keysPath`).
 */
function rotationKeysSection(t: InboundTransfer, keysPath: string | undefined): string {
  const keys = (t.plcOperation as { rotationKeys?: unknown } | undefined)?.rotationKeys
  if (!Array.isArray(keys) || keys.length === 0) return ''
  const list = `<ol>${keys
    .map((k, i) => `<li><code>${esc(k)}</code>${i === keys.length - 1 ? " (this server's key)" : ''}</li>`)
    .join('')}</ol>`
  if (keys.length > 1)
    return `<h2>Who can change your identity</h2>
<p>These rotation keys can change your identity, highest priority first. Whoever holds the private key of one of
them can undo, within 72 hours, a change made with any key below it: keep yours safe, it is how you take your
account back if a server ever moves it without you.</p>
${list}`
  return `<h2>Who can change your identity</h2>
<div class="warn" role="note">
<p><strong>Only this server can change your identity now:</strong> its key is the only rotation key your account has.</p>
<p>A rotation key of your own, placed first, outranks it. For 72 hours after any change to your identity, a key
ranked above the one that made the change can undo it: with your key first, no server (this one included) can
move your account without you being able to take it back.</p>
${
  keysPath
    ? `<p><a href="${esc(keysPath)}/list?identifier=${encodeURIComponent(t.did)}">Make a rotation key of your own</a>:
the key pair is made in your browser and the private key never leaves it; you save it, then this server asks
you to confirm by email before putting it first.</p>`
    : `<p>This server has no page for adding one; a tool such as <code>goat</code> can: <code>goat key generate</code>
makes the key pair, and <code>goat account plc</code> (request-token, sign, submit) puts it first with a code this
server emails you.</p>`
}
</div>
${list}`
}

/**
 * A draft source: what it handed over besides posts and images. Known only now, from the
 * capabilities both sides agreed on at its exportAccount (spec/dialect-draft.md §7), so the
 * checklist could only say "if your current server offers them".
 */
function draftHandedOver(t: InboundTransfer): string {
  return t.capabilities?.includes('preferences')
    ? '<p>Your current server also handed over your private account data (your email address and whether it is confirmed) and your app settings.</p>'
    : '<p class="warn">Your current server handed over your private account data (your email address and whether it is confirmed) but does not offer your app settings, so they were not copied: set them again in your apps after the move.</p>'
}

/** Which posts would lose which images, whose fault it is, and the two ways on. */
function missingReport(t: InboundTransfer, uses: BlobUse[]): string {
  const missing = t.missingBlobs.length
  const posts = uses.map(
    (u) =>
      `<li>${u.text ? `“${esc(u.text)}”` : `<code>${esc(u.uri)}</code>`}${u.createdAt ? ` (${esc(u.createdAt.slice(0, 10))})` : ''}</li>`,
  )
  return `<div class="warn" role="note">
<p><strong>${missing} ${missing === 1 ? 'image or file' : 'images or files'} could not be copied:</strong> your current
server no longer has ${missing === 1 ? 'it' : 'them'} (the fault is there, not here; everything else was copied and checked).</p>
${posts.length > 0 ? `<p>These would lose ${missing === 1 ? 'it' : 'them'}:</p><ul>${posts.join('')}</ul>` : ''}
<form method="post" action="/migrate/transfer/${esc(t.transferId)}/retry-missing">
<button type="submit">Try those again</button>
</form>
<p>Or move anyway: tick "Move anyway, without the missing files" below.</p>
<details><summary>Technical details</summary><ul>${t.missingBlobs.map((c) => `<li><code>${esc(c)}</code></li>`).join('')}</ul></details>
</div>`
}

/** Before the identity is asked to change, the user can still call the move off. */
function cancelForm(t: InboundTransfer): string {
  return `<form method="post" action="/migrate/transfer/${esc(t.transferId)}/cancel">
<p>Changed your mind? Nothing has moved yet.</p>
<button type="submit">Cancel this move</button>
</form>`
}

/**
 * Whether the code is on its way: a plain or draft source is asked right after the data moved
 * (the record notes when), so for a moment the page is shown before it has been asked.
 */
function codeAsked(t: InboundTransfer): string {
  const asked = t.plcCodeRequestedAt !== undefined || (t.dialect !== 'plain' && t.dialect !== 'draft')
  return asked || t.failure
    ? 'Your current server has emailed you a confirmation code.'
    : 'Your current server is being asked to email you a confirmation code now; it usually arrives within a minute.'
}

/** What the move leaves behind (`notMoved`), said before the user enters the code that commits to it. */
function notMovedReport(t: InboundTransfer): string {
  if (!t.notMoved?.length) return ''
  return `<div class="warn" role="alert"><p>Not moved:</p><ul>${t.notMoved.map((n) => `<li>${esc(n)}</li>`).join('')}</ul>
<p>To move it too, cancel this move, allow access to it at your old server, and start again; or go on without it.</p></div>`
}
