import { randomBytes } from 'node:crypto'
import type { AppContext } from '@atproto/pds'
import type { AccountState } from '@pds-transfer/core'

type Did = `did:${string}:${string}`

/**
 * The private state (section 2.8) of an account on the reference PDS: email and its
 * confirmation, unused invite codes. App passwords are credentials and do not leave
 * (spec/decisions.md, D24). Muted words and pinned feeds live in its preferences, which
 * travel apart.
 */
export async function exportAccountState(ctx: AppContext, did: string): Promise<AccountState> {
  const account = await ctx.accountManager.getAccount(did as Did, {
    includeDeactivated: true,
    includeTakenDown: true,
  })
  if (!account) throw new Error(`no account ${did}`)
  const codes = await ctx.accountManager.getAccountInvitesCodes(did as Did)
  const inviteCodes = codes.filter((c) => !c.disabled && c.available > c.uses.length).map((c) => c.code)
  return {
    ...(account.email && { email: account.email, emailConfirmed: account.emailConfirmedAt !== null }),
    ...(inviteCodes.length > 0 && { inviteCodes }),
  }
}

/**
 * Applies a received private state to an account created for the transfer: the email, with its
 * confirmation. No credential moves (D24): the account gets an unusable random hash until the
 * user chooses a password in /migrate (`ReferencePdsSink.setPassword`) or through the PDS's
 * reset-password email, sent to the imported address. Invite codes are this server's to issue
 * and are not imported.
 */
export async function importAccountState(ctx: AppContext, did: string, state: AccountState): Promise<void> {
  const db = ctx.accountManager.db.db
  if (state.email) {
    const emailConfirmedAt = state.emailConfirmed ? new Date().toISOString() : null
    const existing = await db.selectFrom('account').select('did').where('did', '=', did).executeTakeFirst()
    if (existing) {
      await db
        .updateTable('account')
        .set({ email: state.email.toLowerCase(), emailConfirmedAt } as never)
        .where('did', '=', did)
        .execute()
    } else {
      const unusable = `${randomBytes(16).toString('hex')}:${randomBytes(64).toString('hex')}`
      await db
        .insertInto('account')
        .values({
          did,
          email: state.email.toLowerCase(),
          passwordScrypt: unusable,
          emailConfirmedAt,
        } as never)
        .execute()
    }
  }
}
