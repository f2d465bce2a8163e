import { esc } from './html-page.ts'
import type { InboundTransfer } from './inbound-transfer.ts'

/**
 * Signing in after a move (D24: no credential moves). The password is chosen in the code
 * form, because only the account's owner has the code; whoever holds only a transfer page's
 * URL must not be able to set it. Without one, the result page offers the PDS's own
 * reset-password flow (`com.atproto.server.requestPasswordReset` / `resetPassword`, emailed to
 * the address that moved), forwarded by the routes in migrate-plugin.ts.
 */

/** The password fields of the code form (shown when this server can set a password); `state` marks them invalid. */
export function passwordFields(host: string, state = ''): string {
  return `<fieldset>
<legend>Your password at ${esc(host)}</legend>
${state ? '<p>Passwords are not shown again: type both once more.</p>' : ''}
<p>Passwords do not move with your account. Choose the one you will sign in with here (at least 8 characters),
or leave this empty and set one by email afterwards.</p>
<label for="password">New password</label>
<input type="password" id="password" name="password" autocomplete="new-password" minlength="8" maxlength="256"${state}>
<label for="password2">The same password again</label>
<input type="password" id="password2" name="password2" autocomplete="new-password" minlength="8" maxlength="256">
</fieldset>`
}

/** What the result page says about signing in here, with the reset path when no password was set. */
export function signInSection(t: InboundTransfer, host: string, resetSent?: boolean): string {
  const apps =
    '<p>App passwords and apps you had signed in to do not move: create new app passwords here and sign in to your apps again, choosing this server.</p>'
  if (t.passwordChosen) {
    return `<p>Sign in at <strong>${esc(host)}</strong> with your handle or email and the password you chose.</p>${apps}`
  }
  const why =
    t.passwordChosen === false
      ? '<p class="warn" role="note">The password you chose could not be set here.</p>'
      : '<p>You did not choose a password for this server yet.</p>'
  const action = `/migrate/transfer/${esc(t.transferId)}`
  const step2 = `<form method="post" action="${action}/password">
<p>${resetSent ? 'A code is on its way to your email.' : 'Got a code by email?'} Enter it with your new password.</p>
<label for="resetToken">Code from the email</label>
<input type="text" id="resetToken" name="token" required autocomplete="one-time-code">
<label for="newPassword">New password</label>
<input type="password" id="newPassword" name="password" required autocomplete="new-password" minlength="8" maxlength="256">
<button type="submit">Set my password</button>
</form>`
  return `${why}
<form method="post" action="${action}/password-reset">
<label for="email">Your email address (the one your account had)</label>
<input type="email" id="email" name="email" required autocomplete="email">
<button type="submit">Email me a code to set my password</button>
</form>
${step2}
${apps}`
}
