import type { RecentChange, RotationKeyView } from '@pds-transfer/identity'
import { esc, page, size } from './html-page.ts'
import { SIGNER_SCRIPT } from './recover-signer.ts'

/**
 * The first two pages of /recover (recover-plugin.ts serves them): what the user needs and
 * where their copy is, then the identity as PLC has it, the copy as it answered, and the proof
 * that they hold their key, signed in the page (or with `pds-identity prove`). Pure rendering.
 */

/** What the start form was sent with, shown again after an error at one field. */
export interface StartTyped {
  identifier?: string
  source?: string
  /** `file`: the copy is a file uploaded after the key's proof; otherwise an address. */
  copy?: 'address' | 'file'
}

/** The copy's kind, chosen with radio buttons (no script needed); the file itself comes later. */
function copyChoice(typed: StartTyped): string {
  const file = typed.copy === 'file'
  return `<fieldset>
<legend>Your copy is</legend>
<label class="choice"><input type="radio" name="copy" value="address"${file ? '' : ' checked'}> at an address (a backup service, or a server that still has it)</label>
<label class="choice"><input type="radio" name="copy" value="file"${file ? ' checked' : ''}> a file I kept (you choose it on the next page, after your key is checked)</label>
</fieldset>
`
}

/** The start page; `error` at `field` after a failed check. */
export function recoverStartPage(
  host: string,
  typed: StartTyped = {},
  error?: { field: 'identifier' | 'source'; message: string },
  /** Whether a copy may be uploaded as a file (the server keeps uploads: `RecoverCopies`). */
  uploads = false,
): string {
  const at = (field: 'identifier' | 'source') =>
    error?.field === field
      ? {
          message: `<p class="error" role="alert" id="${field}-error">${esc(error.message)}</p>`,
          state: ` aria-invalid="true" aria-describedby="${field}-error" autofocus`,
        }
      : { message: '', state: '' }
  const id = at('identifier')
  const source = at('source')
  return page(
    'Take your account back',
    `<p>Use this page when the server your account was on is gone, or has changed your account without you
(moved it away, or changed its keys). <strong>${esc(host)}</strong> rebuilds your account here from a copy of
your data, checks every post and image against your signature, and your own rotation key moves your identity here.</p>
<h2>You need</h2>
<ul>
<li><strong>Your rotation key file</strong>: the file you saved when you added a rotation key of your own (in
<code>/migrate</code>, or with <code>pds-identity keygen</code>). It is used in this browser only and is never uploaded.</li>
<li><strong>A copy of your account</strong>: the address of a backup service that holds your account (and its access
token, if it needs one), or of any server that still serves your repository${uploads ? '; or a file you kept: the zip <code>/migrate</code> offered before a move, or an export folder (<code>repo.car</code>, <code>blobs/</code>, <code>prefs.json</code>) zipped' : ''}.</li>
</ul>
<p>Moving from a server that still works? Use <a href="/migrate">/migrate</a> instead: it needs no key file.</p>
<p>Your server still works and you have no rotation key yet? <a href="/keys">Add one of your own</a> now, while it cooperates.</p>
<form method="post" action="/recover/check">
<label for="identifier">Your handle or DID</label>
${id.message}<input type="text" id="identifier" name="identifier" required autocomplete="username" placeholder="did:plc:… or alice.example.com" value="${esc(typed.identifier ?? '')}"${id.state}>
${uploads ? copyChoice(typed) : ''}<div id="copy-address">
<label for="source">Where your copy is (its address)</label>
${source.message}<input type="text" id="source" name="source"${uploads ? '' : ' required'} inputmode="url" autocomplete="url" placeholder="https://backups.example.com" value="${esc(typed.source ?? '')}"${source.state}>
<label for="token">Access token of the copy (if it needs one)</label>
<input type="password" id="token" name="token" autocomplete="off">
</div>
<button type="submit">Continue</button>
</form>${
      uploads
        ? `
<script>
(() => {
  const box = document.getElementById('copy-address');
  const file = document.querySelector('input[name=copy][value=file]');
  const pick = () => { box.hidden = file.checked; };
  document.querySelectorAll('input[name=copy]').forEach((r) => r.addEventListener('change', pick));
  pick();
})();
</script>`
        : ''
    }`,
  )
}

/** The file input of an uploaded copy: last in the form, so the proof arrives before the file. */
function copyFileField(limit: number): string {
  return `<label for="copyfile">Your copy (a .zip file)</label>
<input type="file" id="copyfile" name="copy" accept=".zip,application/zip" required aria-describedby="copyfile-hint">
<p id="copyfile-hint">The zip <code>/migrate</code> offered before a move, or your export folder (<code>repo.car</code>, <code>blobs/</code>, <code>prefs.json</code>) zipped; up to ${esc(size(limit))}. It is sent to this server, checked post by post and image by image, and deleted when the restore ends.</p>
<progress id="upload-progress" hidden></progress>
<p id="upload-status" role="status"></p>
`
}

/** An ISO time as people read it, to the minute. */
function utc(iso: string): string {
  return `${esc(iso.slice(0, 16).replace('T', ' '))} UTC`
}

/** What the proof page shows. */
export interface ProofPageInput {
  did: string
  handle?: string
  /** The PDS PLC names now (maybe the one that took the account). */
  currentPds?: string
  keys: RotationKeyView[]
  /** Keys a change of the last 72 hours removed, and until when they can undo it. */
  formerKeys: { key: string; until: string }[]
  /** The changes of the last 72 hours, each with what it did in words. */
  recent: (RecentChange & { what: string[] })[]
  source: string
  token: string
  /** The copy's latest commit, as it answered. */
  copyRev?: string
  challenge: string
  /** An unfinished restore of this account here. */
  unfinished?: string
  /** The copy is a file chosen on this page, of at most this many bytes (`source` is `UPLOADED_COPY`). */
  uploadLimit?: number
  error?: string
}

/** The second page: the identity, the copy, and the key proof that starts the restore. */
export function recoverProofPage(input: ProofPageInput): string {
  const { did, keys, recent } = input
  const name = input.handle ? `<strong>${esc(input.handle)}</strong>` : `<code>${esc(did)}</code>`
  const keyList = keys.map((k) => `<li data-key="${esc(k.key)}"><code>${esc(k.key)}</code></li>`).join('')
  const removed =
    input.formerKeys.length === 0
      ? ''
      : `<p>Removed by a recent change, and still able to undo it:</p><ul id="former-keys">${input.formerKeys
          .map(
            (f) =>
              `<li data-key="${esc(f.key)}" data-until="${utc(f.until)}"><code>${esc(f.key)}</code> (until ${utc(f.until)})</li>`,
          )
          .join('')}</ul>`
  const changes =
    recent.length === 0
      ? '<p>No change to your identity in the last 72 hours.</p>'
      : `<div class="warn" role="note"><p>Your identity changed in the last 72 hours. A key ranked above the one that
signed a change can undo it until the time shown:</p><ul>${recent
          .map(
            (c) =>
              `<li>${utc(c.createdAt)}: ${c.what.map(esc).join('; ')}. Undoable until ${utc(c.undoableUntil)}.
<details><summary>Signed by</summary><code>${esc(c.signedBy)}</code></details></li>`,
          )
          .join('')}</ul></div>`
  const challenge64 = Buffer.from(input.challenge, 'utf8').toString('base64')
  return page(
    'Prove it is your account',
    `${input.error ? `<p class="error" role="alert">${esc(input.error)}</p>` : ''}
${
  input.unfinished
    ? `<p class="warn" role="note">A restore of this account is already under way here.
<a href="/recover/restore/${esc(input.unfinished)}">Continue it</a>.</p>`
    : ''
}
<dl>
<dt>Account</dt><dd>${name}</dd>
<dt>Your identity points to</dt><dd>${input.currentPds ? esc(input.currentPds) : 'no server'}</dd>
<dt>Your copy</dt><dd>${input.uploadLimit === undefined ? `${esc(input.source)}${input.copyRev ? ` (latest change <code>${esc(input.copyRev)}</code>)` : ''}` : 'a file you choose below'}</dd>
</dl>
<h2>Who can change your identity</h2>
<p>Highest priority first. Your key must be one of these${input.formerKeys.length > 0 ? ', or one a recent change removed' : ''}.</p>
<ol id="keys">${keyList}</ol>
${removed}
${changes}
<form method="post" action="/recover/start" id="proof-form"${input.uploadLimit === undefined ? '' : ' enctype="multipart/form-data"'}>
<input type="hidden" name="did" value="${esc(did)}">
<input type="hidden" name="source" value="${esc(input.source)}">
<input type="hidden" name="token" value="${esc(input.token)}">
<input type="hidden" name="challenge" value="${esc(challenge64)}">
<div id="in-browser" hidden>
<label for="keyfile">Your rotation key file</label>
<input type="file" id="keyfile" accept=".json,application/json" aria-describedby="keyfile-status">
<p id="keyfile-status" role="status">Choose the file; it stays in this browser.</p>
</div>
<details id="by-hand">
<summary>Sign on the command line instead (secp256k1 keys, or without this page's script)</summary>
<p>Run this where your key file is, then paste the two lines it prints:</p>
<pre><code>pds-identity prove --key rotation-key.json --challenge ${esc(challenge64)}</code></pre>
<label for="userKey">key</label>
<input type="text" id="userKey" name="userKey" autocomplete="off" spellcheck="false" placeholder="did:key:z…">
<label for="signature">signature</label>
<input type="text" id="signature" name="signature" autocomplete="off" spellcheck="false">
</details>
<details><summary>What your key signs</summary><pre>${esc(input.challenge)}</pre></details>
${input.uploadLimit === undefined ? '' : copyFileField(input.uploadLimit)}
<p>Nothing changes yet: next, <strong>the copy is read and checked</strong>; your identity changes only when you sign once more, at the end.</p>
<button type="submit" id="start">Start restoring</button>
</form>
<script>
${SIGNER_SCRIPT}
(() => {
  if (!window.crypto || !crypto.subtle) return;
  const form = document.getElementById('proof-form');
  const status = document.getElementById('keyfile-status');
  const ranks = Array.from(document.querySelectorAll('#keys li'), (li) => li.dataset.key);
  const former = new Map(Array.from(document.querySelectorAll('#former-keys li'), (li) => [li.dataset.key, li.dataset.until]));
  document.getElementById('in-browser').hidden = false;
  let key;
  document.getElementById('keyfile').addEventListener('change', async (e) => {
    key = undefined;
    status.className = '';
    const file = e.target.files[0];
    if (!file) return;
    try {
      const loaded = await recoverySigner.load(file);
      const rank = ranks.indexOf(loaded.publicKey);
      if (rank < 0 && former.has(loaded.publicKey)) {
        key = loaded;
        document.getElementById('userKey').value = loaded.publicKey;
        status.className = 'ok';
        status.textContent = 'Your key (' + loaded.publicKey + '). A recent change removed it; it can undo that change until ' + former.get(loaded.publicKey) + '.';
        return;
      }
      if (rank < 0) {
        status.className = 'error';
        status.textContent = 'This key (' + loaded.publicKey + ') is not one of your identity\\'s rotation keys above, so it cannot take the account back. Choose another key file.';
        return;
      }
      key = loaded;
      document.getElementById('userKey').value = loaded.publicKey;
      status.className = 'ok';
      status.textContent = 'Key ' + (rank + 1) + ' of ' + ranks.length + ' in priority: ' + loaded.publicKey;
    } catch (err) {
      status.className = 'error';
      status.textContent = err instanceof recoverySigner.KeyFileError ? err.message : 'This key file could not be read: ' + err.message;
      if (err.publicKey) { document.getElementById('by-hand').open = true; document.getElementById('userKey').value = err.publicKey; }
    }
  });
  form.addEventListener('submit', async (e) => {
    if (document.getElementById('signature').value) return;
    e.preventDefault();
    if (!key) { status.className = 'error'; status.textContent = 'Choose your rotation key file first.'; document.getElementById('keyfile').focus(); return; }
    document.getElementById('signature').value = await key.sign(Uint8Array.from(atob(form.elements.challenge.value), (c) => c.charCodeAt(0)));
    if (form.enctype === 'multipart/form-data') uploadWithProgress(form); else form.submit();
  });
  // A large copy takes minutes to send: show how far it is, then follow the server's answer.
  function uploadWithProgress(form) {
    const bar = document.getElementById('upload-progress');
    const said = document.getElementById('upload-status');
    const xhr = new XMLHttpRequest();
    xhr.open('POST', form.action);
    bar.hidden = false;
    document.getElementById('start').disabled = true;
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      bar.value = e.loaded; bar.max = e.total;
      said.textContent = 'Sending your copy: ' + Math.floor((e.loaded / e.total) * 100) + '% (' + (e.loaded / 1048576).toFixed(1) + ' of ' + (e.total / 1048576).toFixed(1) + ' MiB). Keep this page open until it is sent.';
    };
    // A refusal is shown here, the key and choices kept: the person picks another file and goes on.
    const refused = (message) => {
      document.getElementById('start').disabled = false;
      document.getElementById('signature').value = '';
      bar.hidden = true;
      said.className = 'error';
      said.textContent = message;
      document.getElementById('copyfile').focus();
    };
    xhr.onload = () => {
      if (xhr.responseURL && new URL(xhr.responseURL).pathname.startsWith('/recover/restore/')) { location.assign(xhr.responseURL); return; }
      const answer = new DOMParser().parseFromString(xhr.responseText, 'text/html').querySelector('.error');
      refused(answer ? answer.textContent : 'The server refused the upload (' + xhr.status + '). Try again.');
    };
    xhr.onerror = () => refused('The upload was cut before it ended. Check your connection and press Start restoring again.');
    xhr.send(new FormData(form));
  }
})();
</script>`,
  )
}
