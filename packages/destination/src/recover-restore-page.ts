import { esc, page } from './html-page.ts'
import type { InboundTransfer } from './inbound-transfer.ts'
import { counters, liveProgress, type StepTable, steps } from './migrate-html.ts'
import { passwordFields, signInSection } from './migrate-password.ts'
import { SIGNER_SCRIPT } from './recover-signer.ts'
import type { RestoreOperationRequest } from './restore-completion.ts'
import { COMPLETION_STAGES } from './transfer-completion.ts'

/**
 * The page of one restore in /recover (recover-plugin.ts serves it), rendered from its record:
 * the copy being read and checked, the signing step (what the operation does, signed in the
 * page or on the command line), the identity moving, the result or the failure, each with its
 * next action. Pure rendering: no I/O.
 */

const RESTORE_STEPS: StepTable = [
  [['created', 'streaming', 'retrying'], 'Reading your posts, images and settings from the copy'],
  [['reconciling'], 'Checking every image is here'],
  [['awaitingRecovery'], 'Waiting for your key to sign the identity change'],
  [['submittingPlc', 'activating'], 'Moving your identity here'],
  [['activated'], 'Done'],
]

/** What a restore page shows besides the restore itself. */
export interface RestorePageExtra {
  error?: string
  notice?: string
  resetSent?: boolean
  /** At the signing step: the operation as planned now, or why it cannot be. */
  operation?: RestoreOperationRequest
  operationError?: string
}

/** Why parts of the account could not come from the copy, in words. */
const NOT_RESTORED: Record<string, string> = {
  preferences: 'your app settings (feeds, muted words, content filters)',
  email: 'your email address',
}

export function restorePage(
  t: InboundTransfer,
  view: { origin: string; host: string; canSetPassword: boolean },
  extra: RestorePageExtra = {},
): string {
  const { host } = view
  const alert = extra.error
    ? `<p class="error" role="alert">${esc(extra.error)}</p>`
    : extra.notice
      ? `<p class="ok" role="status">${esc(extra.notice)}</p>`
      : ''
  const running = t.status !== 'failed' && t.status !== 'completed' && t.stage !== 'awaitingRecovery'
  let body: string
  if (t.status === 'completed') {
    body = `<p class="ok" role="status">Your account is back, and lives here now.</p>
${notRestored(t, true)}
${signInSection(t, host, extra.resetSent)}
${rotationKeys(t)}
<p>For the next 72 hours this server watches your identity log and will warn you if anything moves it away.</p>
${t.rollback ? `<p class="error" role="alert">${esc(t.rollback.message)}</p>` : ''}`
  } else if (t.status === 'failed') {
    const failure = t.failure ?? { reason: 'Interrupted', message: 'unknown' }
    const moved = failure.reason === 'ActivationFailed'
    body = `<p class="error" role="alert"><strong>The restore stopped.</strong> ${esc(failure.message)}.</p>
<p>${
      moved
        ? 'Your identity already points here; only the last step is missing. Ask the operator of this server to look at it.'
        : 'Your identity has not changed. Start again when the cause is fixed (the copy reachable, or this server’s disk freed).'
    }</p>
<p><a href="/recover">Start again</a></p>
<details><summary>Technical details</summary><dl>
<dt>Reason</dt><dd><code>${esc(failure.reason)}</code></dd>
<dt>Restore ID</dt><dd><code>${esc(t.transferId)}</code></dd>
</dl></details>`
  } else if (t.stage === 'awaitingRecovery') {
    body = signingSection(t, view, extra)
  } else {
    body = `<div aria-live="polite" id="live">${liveProgress(t)}</div>
<p>You can close this page: the restore goes on without it. Come back to this page's address to continue.</p>
${COMPLETION_STAGES.has(t.stage) && t.failure ? `<p class="warn" role="alert">${esc(t.failure.message)}</p>${finishForm(t, 'Try again')}` : ''}
${COMPLETION_STAGES.has(t.stage) ? '' : cancelForm(t)}
<script>
(() => {
  const poll = async () => {
    const res = await fetch(${JSON.stringify(`/recover/restore/${t.transferId}/live`)});
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
    t.status === 'completed' ? 'Account restored' : 'Restoring your account',
    `${steps(t, RESTORE_STEPS)}\n${alert}\n${body}`,
    running ? { refreshSeconds: 2 } : {},
  )
}

/** The signing step: what the copy gave, what signing does, and the two ways to sign. */
function signingSection(
  t: InboundTransfer,
  view: { origin: string; host: string; canSetPassword: boolean },
  extra: RestorePageExtra,
): string {
  const op = extra.operation
  const missing = t.missingBlobs.length
  const id = esc(t.transferId)
  const what = op
    ? `<h2>What signing does</h2>
<ul>
<li>Your identity will point to <strong>${esc(view.host)}</strong>, with a new signing key made here for your account.</li>
<li>Rotation keys, highest priority first: ${op.operation.rotationKeys.map((k, i) => `${i === 0 ? 'yours' : 'this server’s'} (<code>${esc(k)}</code>)`).join(', then ')}.</li>
${
  op.kind === 'fork'
    ? `<li class="warn">It undoes ${op.nullifies.length} ${op.nullifies.length === 1 ? 'change' : 'changes'} made without you
(${op.nullifies.map((n) => esc(n.createdAt.slice(0, 16).replace('T', ' '))).join(', ')} UTC). The directory allows this only
until <strong>${esc((op.deadline ?? '').slice(0, 16).replace('T', ' '))} UTC</strong>: sign before then.</li>`
    : ''
}
</ul>
<details><summary>The operation</summary><pre>${esc(JSON.stringify(op.operation, null, 2))}</pre></details>`
    : `<p class="error" role="alert">${esc(extra.operationError ?? 'The identity change could not be prepared.')}</p>`
  const cli = op
    ? `pds-identity recover ${t.did} --key rotation-key.json --pds ${view.origin} --signing-key ${op.operation.verificationMethods.atproto} --pds-rotation-key ${op.operation.rotationKeys[1] ?? ''}`
    : ''
  return `<p class="ok" role="status">${missing > 0 ? 'Everything the copy holds' : 'Your whole account'} has been read from the copy and checked against your signature.</p>
${counters(t)}
${notRestored(t)}
${
  missing > 0
    ? `<div class="warn" role="note"><p><strong>${missing} ${missing === 1 ? 'image or file is' : 'images or files are'} not in the copy.</strong>
The posts that use ${missing === 1 ? 'it' : 'them'} will show without ${missing === 1 ? 'it' : 'them'}.</p>
<details><summary>Technical details</summary><ul>${t.missingBlobs.map((c) => `<li><code>${esc(c)}</code></li>`).join('')}</ul></details></div>`
    : ''
}
${what}
${
  op
    ? `<form method="post" action="/recover/restore/${id}/complete" id="sign-form">
<div id="in-browser" hidden>
<label for="keyfile">Your rotation key file</label>
<input type="file" id="keyfile" accept=".json,application/json" aria-describedby="keyfile-status">
<p id="keyfile-status" role="status">Choose the file again; it stays in this browser.</p>
</div>
<details id="by-hand">
<summary>Sign on the command line instead (secp256k1 keys, or without this page's script)</summary>
<p>Run this where your key file is; it prints the signed change. Paste all of it here.</p>
<pre><code>${esc(cli)}</code></pre>
<label for="signedOperation">The signed change (what the command printed)</label>
<textarea id="signedOperation" name="signedOperation" rows="6" spellcheck="false"></textarea>
</details>
${missing > 0 ? '<label><input type="checkbox" name="acceptMissingBlobs" value="yes"> Restore without the missing files</label>' : ''}
${noEmail(t) ? emailField(view.host) : ''}
${view.canSetPassword ? passwordFields(view.host) : ''}
<button type="submit">Sign and take my account back</button>
</form>
<script>
${SIGNER_SCRIPT}
(() => {
  if (!window.crypto || !crypto.subtle) return;
  const form = document.getElementById('sign-form');
  const status = document.getElementById('keyfile-status');
  const pasted = document.getElementById('signedOperation');
  const expected = ${JSON.stringify(t.restore?.userKey ?? '')};
  document.getElementById('in-browser').hidden = false;
  form.addEventListener('submit', async (e) => {
    if (pasted.value.trim()) return;
    e.preventDefault();
    status.className = '';
    const file = document.getElementById('keyfile').files[0];
    if (!file) { status.className = 'error'; status.textContent = 'Choose your rotation key file first.'; return; }
    try {
      const key = await recoverySigner.load(file);
      if (key.publicKey !== expected) throw new recoverySigner.KeyFileError('This is not the key you started with (' + expected + '). Choose that key file.');
      const res = await fetch(${JSON.stringify(`/recover/restore/${t.transferId}/operation`)});
      const body = await res.json();
      if (!res.ok) throw new recoverySigner.KeyFileError(body.message || 'The identity change could not be prepared.');
      const sig = await key.sign(recoverySigner.fromB64(body.bytesToSign));
      pasted.value = JSON.stringify({ ...body.operation, sig });
      form.submit();
    } catch (err) {
      status.className = 'error';
      status.textContent = err instanceof recoverySigner.KeyFileError ? err.message : 'Signing failed: ' + err.message;
      if (err.publicKey) document.getElementById('by-hand').open = true;
    }
  });
})();
</script>
${
  // Without a signature here no password or email can be chosen: only an account whose email
  // came with the copy can then set its password (by email).
  noEmail(t)
    ? ''
    : `<details>
<summary>Sent the change to the PLC directory yourself (<code>--submit</code>)?</summary>
${finishForm(t, 'Finish the restore')}
<p>A password is then set by email, from the next page.</p>
</details>`
}`
    : `<p><a href="/recover/restore/${id}">Try again</a></p>`
}
${cancelForm(t)}`
}

/** Finishing without an operation here: PLC must already name this server. */
function finishForm(t: InboundTransfer, label: string): string {
  return `<form method="post" action="/recover/restore/${esc(t.transferId)}/complete">
<input type="hidden" name="submitted" value="yes">
${t.missingBlobs.length > 0 ? '<input type="hidden" name="acceptMissingBlobs" value="yes">' : ''}
<button type="submit">${esc(label)}</button>
</form>`
}

function cancelForm(t: InboundTransfer): string {
  return `<form method="post" action="/recover/restore/${esc(t.transferId)}/cancel">
<p>Nothing has changed yet: your identity is as it was.</p>
<button type="submit">Cancel this restore</button>
</form>`
}

/** Whether the copy held no email for the account (so none is here to sign in or reset with). */
function noEmail(t: InboundTransfer): boolean {
  return (t.notRestored ?? []).some((p) => p.startsWith('email'))
}

/** The email a restored account signs in and resets its password with, where the copy had none. */
function emailField(host: string): string {
  return `<label for="email">Your email address at ${esc(host)}</label>
<p>It was not in the copy. You need it to sign in here and to reset your password.</p>
<input type="email" id="email" name="email" required autocomplete="email">`
}

/** What the copy could not give, and what it means for the user. */
function notRestored(t: InboundTransfer, done = false): string {
  // Once restored, the email is the one the user gave at the signing step.
  const entries = (t.notRestored ?? []).filter((p) => !(done && p.startsWith('email')))
  if (entries.length === 0) return ''
  // Entries are "<part> (<why>)": the part in words, the why in the technical details.
  const parts = entries.map((p) => NOT_RESTORED[p.split(' ', 1)[0] as string] ?? p)
  return `<div class="warn" role="note"><p>Not in the copy, so not restored: ${parts.map(esc).join('; ')}.</p>
<details><summary>Technical details</summary><ul>${entries.map((p) => `<li>${esc(p)}</li>`).join('')}</ul></details></div>`
}

/** The rotation keys the identity now has, from the submitted operation. */
function rotationKeys(t: InboundTransfer): string {
  const keys = (t.plcOperation as { rotationKeys?: unknown } | undefined)?.rotationKeys
  if (!Array.isArray(keys) || keys.length === 0) return ''
  return `<h2>Who can change your identity</h2>
<p>Highest priority first. Your key is first: keep its file safe, it is what brought your account back.</p>
<ol>${keys.map((k) => `<li><code>${esc(k)}</code></li>`).join('')}</ol>`
}
