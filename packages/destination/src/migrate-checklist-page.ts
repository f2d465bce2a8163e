/**
 * The checklist /migrate shows before a move (migrate-plugin.ts serves it): what kind of source the
 * current server is, what moves from it and what does not, the rotation keys, a backup first, and
 * the sign-in at the current server (with, for a plain source only, an optional backup to read
 * from: the engine reads a copy for no other kind). Pure rendering.
 */
import type { TransferWellKnown } from '@pds-transfer/core'
import type { DidResolver } from './did-resolver.ts'
import { esc, page } from './html-page.ts'
import { type SizeEstimate, sizeSentence } from './migrate-size-estimate.ts'
import type { SourceDialect } from './source-dialect.ts'

/** What the checklist is rendered from. */
export interface ChecklistInput {
  did: string
  identity: Awaited<ReturnType<DidResolver['resolve']>>
  /** The current server's URL (no trailing slash). */
  source: string
  /** This server's origin and service DID. */
  origin: string
  serviceDid: string
  /** What kind of source the current server is (`sourceDialect`). */
  dialect: SourceDialect
  /** The source's well-known document; for a v1 source only. */
  capabilities: TransferWellKnown | undefined
  /** The encryption both sides speak, for a v1 source. */
  algorithm: string | undefined
  /** What the current server said of the account's images and files (none if it would not). */
  size?: SizeEstimate | undefined
}

/** The page. */
export function checklistPage(input: ChecklistInput): string {
  const { did, identity, source, origin, dialect, capabilities, algorithm } = input
  const canMove = dialect !== 'v1' || algorithm !== undefined
  const ownKeys = identity.rotationKeys.length > 1
  const here = `<strong>${esc(new URL(origin).host)}</strong>`
  const checklist = [
    ...(input.size ? [`<li>Size: ${esc(sizeSentence(input.size))}</li>`] : []),
    ownKeys
      ? `<li>Rotation keys: ${identity.rotationKeys.length} keys can change your identity; the one at the top
(<code>${esc(identity.rotationKeys[0])}</code>) overrides your current server's. Keep it safe: it is how you undo
a bad move within 72 hours.</li>`
      : `<li class="warn"><strong>You hold no rotation key of your own.</strong> Only your current
server can change your identity. If anything goes wrong with the move, you depend on it to undo it. You can add
a rotation key of your own at the last step of this move, before your identity changes.</li>`,
    `<li>Back up first: <a href="/migrate/backup?did=${encodeURIComponent(did)}" download>download your posts and
images</a> as one zip file (a few seconds for most accounts, longer with many images). Keep it: with it your posts and
images can be imported into an account on any server (its README.txt says how).</li>`,
    ...(dialect === 'v1' && !algorithm
      ? [
          `<li class="warn">Your current server and this one have no encryption method in common, so
they cannot move your account between them. Ask either server's operator, or use a client-side migration tool.</li>`,
        ]
      : WHAT_MOVES[dialect](here)),
    `<li>Your followers, likes and replies from others live in their own repositories: they keep pointing at your
identity, which moves, so they follow you here.</li>`,
    `<li>For 72 hours after the move, this server watches your identity log and warns you if anything tries to
move it away again.</li>`,
  ]
  return page(
    'Before you move',
    `<dl>
<dt>Account</dt><dd>${identity.handle ? `<strong>${esc(identity.handle)}</strong>` : `<code>${esc(did)}</code>`}</dd>
<dt>Current server</dt><dd>${esc(new URL(source).host)}</dd>
<dt>New server</dt><dd>${esc(new URL(origin).host)}</dd>
</dl>
<h2>Checklist</h2>
<ul>${checklist.join('\n')}</ul>
<details><summary>Technical details</summary><dl>
<dt>Account DID</dt><dd><code>${esc(did)}</code></dd>
<dt>Current server</dt><dd>${esc(source)} ${
      capabilities
        ? `(<code>${esc(capabilities.did)}</code>), transfer protocol version ${esc(capabilities.version)}`
        : dialect === 'draft'
          ? '(the current draft of direct transfer, proposal 0015: the private state from its JSON exportAccount, the rest over the sync endpoints)'
          : '(no transfer endpoints: read over the sync endpoints)'
    }</dd>
<dt>New server</dt><dd><code>${esc(input.serviceDid)}</code>${algorithm ? `, encryption <code>${esc(algorithm)}</code>` : ''}</dd>
</dl></details>
${
  canMove
    ? `<form method="post" action="/migrate/authorize">
<input type="hidden" name="did" value="${esc(did)}">${dialect === 'plain' ? fromBackupField() : ''}
<p>Next, your current server asks you to sign in and allow this server to copy your account.
If you already started a move here, signing in again takes you back to it.</p>
<button type="submit">Sign in at ${esc(new URL(source).host)}</button>
</form>`
    : ''
}`,
  )
}

/**
 * What moves from each kind of source, what does not, how the identity change is approved and
 * who deactivates the old copy: one list item each, in plain words.
 */
const WHAT_MOVES: Record<SourceDialect, (here: string) => string[]> = {
  v1: (here) => [
    `<li>Your current server supports direct transfer: your data goes straight from it to ${here}, encrypted
end to end; it does not pass through this browser. When the data has arrived and been checked, your current server
emails you a code to approve the identity change.</li>`,
    `<li>Your email address, its confirmation and your settings are copied. Passwords are not: you choose the
password for this server during the move (or later, by email). App passwords and apps you signed in to must
be set up again here.</li>`,
  ],
  draft: (here) => [
    `<li>Your current server supports the draft version of direct transfer. ${here} reads your posts and images
through the standard endpoints every server has (each post and image is checked against your signature as it
arrives), and your current server hands over your private account data directly. Your data does not pass through
this browser. When it has all arrived, your current server emails you a code to approve the identity change. Its
sign-in page will warn that this server asks to manage your identity: that is what lets it request the code and
have your current server sign the change; nothing changes before you enter the code.</li>`,
    `<li>From this kind of server your posts, images and follows are copied, and the private data your
current server hands over: your email address and whether it is confirmed, invite codes, and muted words and
pinned feeds where it keeps them. Your app settings are copied only if your current server offers them (the
last step of the move says whether it did). Passwords are not copied: you choose the password for this server
during the move. App passwords and apps you signed in to must be set up again here.</li>
<li>When you enter the code, your current server signs the identity change and deactivates your account there.
Anything posted there in the last seconds of the move may not come along: avoid posting while the last step
runs.</li>`,
  ],
  plain: (here) => [
    `<li>Your current server has no direct-transfer support, so ${here} reads your
account through the standard endpoints every server has (each post and image is checked against your signature
as it arrives), and your current server emails you a code to approve the identity change. Your data does not pass
through this browser. Its sign-in page will warn that this server asks to manage your identity and your account's
status: that is what lets it request the code, have the identity change signed, and deactivate the old copy at the
end; nothing changes before you enter the code.</li>`,
    `<li>From this kind of server your posts, images, follows, settings and email address are copied (your current
server asks you to allow sharing the email, and whether it is confirmed). Invite codes and other private settings of
that server are not. Passwords are not copied either: you choose the password for this server during the move. App passwords
and apps you signed in to must be set up again here.</li>
<li>When the move is done, this server deactivates your account at your current server. Anything posted there in
the last second of the move may not come along: avoid posting while the last step runs.</li>`,
  ],
}

/** The checklist's optional backup to read from (a plain source only). */
function fromBackupField(): string {
  return `
<details id="from-backup">
<summary>Read your posts and images from a backup instead (optional, faster)</summary>
<p>If a backup service holds a recent copy of this account, this server can read your posts and images from it;
your current server then only gives what changed since the backup, your settings and email, and approves the
identity change as before. Nothing in the backup is trusted: every post and image is checked against your signature.</p>
<label for="copy">Address of the backup</label>
<input type="text" id="copy" name="copy" inputmode="url" autocomplete="off" placeholder="https://backups.example.com">
<label for="copyToken">Its access token (if it needs one)</label>
<input type="password" id="copyToken" name="copyToken" autocomplete="off">
</details>`
}
