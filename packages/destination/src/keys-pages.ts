import type { RecentChange, RotationKeyView } from '@pds-transfer/identity'
import { esc, page } from './html-page.ts'
import { SIGNER_SCRIPT } from './recover-signer.ts'
import { keygenSection } from './rotation-keygen.ts'

/**
 * The pages of /keys (keys-plugin.ts serves them): who can change an identity and which key is
 * the person's, then adding a key of their own through their PDS. Pure rendering; readable
 * without scripts (the key file is read by a script, in the page only; without it the person
 * pastes their public key).
 */

/** What a rotation key of one's own is for, said once on the start and list pages. */
const WHY = `<p>A <strong>rotation key</strong> can change your identity: which server hosts your account, your handle,
and the key your posts are signed with. Your server holds one. A rotation key <strong>of your own</strong>, kept by you,
lets you take your account back if that server shuts down or turns against you.</p>
<p>Keys are ranked. For <strong>72 hours</strong> after a change, a key ranked above the one that signed it can undo it.
So your own key belongs first: then no server can make a change you cannot undo.</p>`

/** An ISO time as people read it, to the minute. */
function utc(iso: string): string {
  return `${esc(iso.slice(0, 16).replace('T', ' '))} UTC`
}

/** A field's error and its ARIA state, when `error` is at `field`. */
function at(field: string, error?: { field: string; message: string }) {
  return error?.field === field
    ? {
        message: `<p class="error" role="alert" id="${field}-error">${esc(error.message)}</p>`,
        state: ` aria-invalid="true" aria-describedby="${field}-error" autofocus`,
      }
    : { message: '', state: '' }
}

/** The start page: the handle or DID, and why it matters. */
export function keysStartPage(typed = '', error?: string): string {
  const id = at('identifier', error === undefined ? undefined : { field: 'identifier', message: error })
  return page(
    'Your rotation keys',
    `${WHY}
<form method="get" action="/keys/list">
<label for="identifier">Your handle or DID</label>
${id.message}<input type="text" id="identifier" name="identifier" required autocomplete="username" placeholder="alice.example.com" value="${esc(typed)}"${id.state}>
<button type="submit">Show my keys</button>
</form>`,
  )
}

/** The identity's keys in rank, the person's marked. */
function keyList(keys: RotationKeyView[]): string {
  return `<ol id="keys">${keys
    .map(
      (k) =>
        `<li data-key="${esc(k.key)}"><code>${esc(k.key)}</code><span class="yours">${k.yours ? ' <strong>(yours)</strong>' : ''}</span></li>`,
    )
    .join('')}</ol>`
}

/** One change of the last 72 hours, in words; `movedHere` when it pointed the identity at this server. */
export type KeysPageChange = RecentChange & { what: string[]; movedHere?: boolean }

/**
 * The changes of the last 72 hours, in words. A change that moved the account to this server is
 * most likely the person's own move (they often arrive here from the "Moved" page): it is named
 * so, and only changes that are not alarm them.
 */
function recentChanges(recent: KeysPageChange[]): string {
  if (recent.length === 0) return '<p>No change to your identity in the last 72 hours.</p>'
  const items = `<ul>${recent
    .map(
      (c) =>
        `<li>${utc(c.createdAt)}: ${c.movedHere ? '<strong>the move to this server</strong>: ' : ''}${c.what.map(esc).join('; ')}. Undoable until ${utc(c.undoableUntil)}.
<details><summary>Signed by</summary><code>${esc(c.signedBy)}</code></details></li>`,
    )
    .join('')}</ul>`
  if (recent.every((c) => c.movedHere))
    return `<div class="ok" role="note"><p>Your account moved to this server in the last 72 hours:</p>${items}
<p>If you did not move it yourself, <a href="/recover">take your account back</a> with your key before the time shown.</p></div>`
  return `<div class="warn" role="note"><p>Your identity changed in the last 72 hours. A key ranked above the one that
signed a change can undo it until the time shown:</p>${items}<p>Not you? <a href="/recover">Take your account back</a> with your key, within those 72 hours.</p></div>`
}

/** What the list page shows. */
export interface KeysListInput {
  did: string
  handle?: string
  /** The PDS the identity names now. */
  pds?: string
  keys: RotationKeyView[]
  recent: KeysPageChange[]
  /** A public key the person pasted to check (the page without scripts). */
  checkedKey?: string
  /** The public key typed into "Add a key of your own". */
  rotationKey?: string
  error?: { field: 'key' | 'rotationKey'; message: string }
  /** PLC's limit on rotation keys (none can be added at it). */
  maxKeys: number
}

/** The identity's keys by rank, which is the person's, and "Add a key of your own". */
export function keysListPage(input: KeysListInput): string {
  const { did, keys } = input
  const name = input.handle ? `<strong>${esc(input.handle)}</strong>` : `<code>${esc(did)}</code>`
  const pdsHost = input.pds ? new URL(input.pds).host : undefined
  const yours = keys.find((k) => k.yours)
  const checked = at('key', input.error)
  const added = at('rotationKey', input.error)
  // Said by the server when the person pasted a key (no scripts), by the script for a key file.
  const verdict =
    input.checkedKey === undefined || input.error?.field === 'key'
      ? ''
      : yours?.rank === 1
        ? `<p class="ok" role="status" id="verdict">Your key is first: it outranks every other key. There is nothing to add; keep its file safe.</p>`
        : yours
          ? `<p class="warn" role="status" id="verdict">Your key is number ${yours.rank}. Keys above it can make changes it cannot undo: put it first below.</p>`
          : `<p class="warn" role="status" id="verdict">None of these keys is yours (<code>${esc(input.checkedKey)}</code> is not among them). Add a key of your own below.</p>`
  const full = keys.length >= input.maxKeys && !yours
  return page(
    'Who can change your identity',
    `<dl>
<dt>Account</dt><dd>${name}</dd>
<dt>Hosted by</dt><dd>${pdsHost ? esc(pdsHost) : 'no server'}</dd>
</dl>
<h2>Rotation keys, strongest first</h2>
<p>Each of these can change your identity, and for 72 hours a key can undo what a key below it did. A key of your
own, first, lets you take your account back if your server dies or turns against you.</p>
${keyList(keys)}
${recentChanges(input.recent)}
<details><summary>More about rotation keys</summary>${WHY}
<p>With your key you can later take your account back at <a href="/recover">/recover</a> (or with
<code>pds-identity recover</code>), from a copy of your data, even when your server is gone.</p></details>
<h2>Which one is yours?</h2>
<div id="in-browser" hidden>
<label for="keyfile">Your rotation key file</label>
<input type="file" id="keyfile" accept=".json,application/json" aria-describedby="keyfile-status">
<p id="keyfile-status" role="status">Choose the file you saved when you made your key. It is read in this browser only and never uploaded.</p>
</div>
<form method="get" action="/keys/list">
<input type="hidden" name="identifier" value="${esc(did)}">
<label for="key">Or paste your public key (<code>did:key:z…</code>)</label>
${checked.message}<input type="text" id="key" name="key" autocomplete="off" spellcheck="false" placeholder="did:key:zDn…" value="${esc(input.checkedKey ?? '')}"${checked.state}>
<button type="submit">Check</button>
</form>
${verdict}
<section id="add" aria-labelledby="add-title"${yours?.rank === 1 ? ' hidden' : ''}>
<h2 id="add-title">Add a key of your own</h2>
${
  full
    ? `<p class="warn" role="note">Your identity already has ${keys.length} rotation keys, the most PLC allows. One must be
removed before yours can be added: ask your server's operator which of them it does not need.</p>`
    : `<form method="post" action="/keys/authorize" id="add-form">
<input type="hidden" name="did" value="${esc(did)}">
${keygenSection(did)}
<noscript><p class="warn">Making a key pair here needs this page's script. Without it, make one on your computer
with <code>pds-identity keygen --out rotation-key.json</code> and paste the public key it prints below.</p></noscript>
<label for="rotationKey">Your public rotation key</label>
${added.message}<input type="text" id="rotationKey" name="rotationKey" required autocomplete="off" spellcheck="false" placeholder="did:key:zDn…" value="${esc(input.rotationKey ?? '')}"${added.state} aria-describedby="rotationKey-hint">
<p id="rotationKey-hint">Filled in once you have saved the key file. Only the public key is sent; the private key stays in your file.</p>
<p>Next you sign in at ${pdsHost ? `<strong>${esc(pdsHost)}</strong>` : 'your server'}. It asks whether this server may
manage your identity: that lets it have your server email you a code and sign the change with it. Nothing changes
until you type the code, and this server checks that the change puts your key first and changes nothing else
before it is sent.</p>
<button type="submit">Sign in at ${esc(pdsHost ?? 'your server')}</button>
</form>`
}
</section>
<script>
${SIGNER_SCRIPT}
(() => {
  if (!window.crypto || !crypto.subtle) return;
  const status = document.getElementById('keyfile-status');
  const items = Array.from(document.querySelectorAll('#keys li'));
  const add = document.getElementById('add');
  document.getElementById('in-browser').hidden = false;
  document.getElementById('keyfile').addEventListener('change', async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    let publicKey;
    try {
      publicKey = (await recoverySigner.load(file)).publicKey;
    } catch (err) {
      // A secp256k1 file cannot be checked here, but its public key still says which is yours.
      if (!err.publicKey) {
        status.className = 'error';
        status.textContent = err instanceof recoverySigner.KeyFileError ? err.message : 'This key file could not be read: ' + err.message;
        return;
      }
      publicKey = err.publicKey;
    }
    const rank = items.findIndex((li) => li.dataset.key === publicKey);
    for (const li of items) li.querySelector('.yours').innerHTML = li.dataset.key === publicKey ? ' <strong>(yours)</strong>' : '';
    if (rank === 0) {
      status.className = 'ok';
      status.textContent = 'This is your key, and it is first: it outranks every other key. There is nothing to add; keep the file safe.';
      add.hidden = true;
      return;
    }
    add.hidden = false;
    const field = document.getElementById('rotationKey');
    if (rank > 0) {
      status.className = 'warn';
      status.textContent = 'This is your key, number ' + (rank + 1) + '. Keys above it can make changes it cannot undo: put it first below.';
      if (field) field.value = publicKey;
      return;
    }
    status.className = 'warn';
    status.textContent = 'None of these keys is yours: this file holds ' + publicKey + '. Add a key of your own below, or choose another file.';
  });
})();
</script>`,
  )
}

/** The code step: the PDS emailed a code; typed here, it lets the change be signed. */
export function keysCodePage(input: {
  flowId: string
  did: string
  pds: string
  userKey: string
  typed?: string
  error?: string
  notice?: string
}): string {
  const base = `/keys/add/${esc(input.flowId)}`
  const token = at('token', input.error === undefined ? undefined : { field: 'token', message: input.error })
  return page(
    'Type the code from your email',
    `${input.notice ? `<p class="ok" role="status">${esc(input.notice)}</p>` : ''}
<p>Your server (<strong>${esc(new URL(input.pds).host)}</strong>) has emailed a code to your account's email address.
With it, your server signs the change that puts your key first. This server checks the change before sending it:
if it changes anything else, nothing is sent.</p>
<dl><dt>Key to put first</dt><dd><code>${esc(input.userKey)}</code></dd></dl>
<form method="post" action="${base}/complete">
<label for="token">Code</label>
${token.message}<input type="text" id="token" name="token" required autocomplete="one-time-code" placeholder="XXXXX-XXXXX" value="${esc(input.typed ?? '')}"${token.state}>
<button type="submit">Put my key first</button>
</form>
<form method="post" action="${base}/resend">
<p>No email, or the code expired (they last minutes)?</p>
<button type="submit">Email me a new code</button>
</form>`,
  )
}

/** The end: the keys as PLC lists them now, the person's first, and what to do with it. */
export function keysDonePage(input: { did: string; keys: RotationKeyView[]; changed: boolean }): string {
  return page(
    'Your key is first',
    `<p class="ok" role="status">${
      input.changed
        ? 'Done: PLC now lists your key first. It outranks every other key, your server\u2019s too.'
        : 'Your key was already first: nothing needed to change.'
    }</p>
${keyList(input.keys)}
<h2>Keep it safe</h2>
<ul>
<li>Keep the key file somewhere safe and private: a password manager, a USB stick in a drawer. Anyone holding it
can change your identity.</li>
<li>Without the file your key is useless, and this server has no copy: the private key never left your browser.</li>
</ul>
<h2>How it is used</h2>
<p>If your server shuts down or changes your identity without you, take your account back at
<a href="/recover">/recover</a> with this file and a copy of your data, or on your computer with
<code>pds-identity recover</code>. Changes signed by a server can be undone with it for 72 hours.</p>
<p><a href="/keys/list?identifier=${encodeURIComponent(input.did)}">See your keys again</a></p>`,
  )
}

/** A step that cannot go on: what happened, and the ways forward. */
export function keysProblemPage(message: string, next: { href: string; label: string }[]): string {
  return page(
    'Your key was not added',
    `<p class="error" role="alert">${esc(message)}</p>
<ul>${next.map((n) => `<li><a href="${esc(n.href)}">${esc(n.label)}</a></li>`).join('')}</ul>`,
  )
}
