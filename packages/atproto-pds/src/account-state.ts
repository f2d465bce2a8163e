import { randomBytes } from 'node:crypto'
import type { AppContext } from '@atproto/pds'
import type { AccountState } from '@pds-transfer/core'

type Did = `did:${string}:${string}`

/** An app password as the reference PDS stores it: the scrypt `salt:hash` travels as is. */
interface ReferenceAppPassword {
  name: string
  passwordScrypt: string
  createdAt: string
  privileged: boolean
}

/**
 * The private state (section 2.8) of an account on the reference PDS: email and its
 * confirmation, unused invite codes, app passwords (scrypt hashes, readable by another
 * reference PDS). Muted words and pinned feeds live in its preferences, which travel apart.
 */
export async function exportAccountState(ctx: AppContext, did: string): Promise<AccountState> {
  const account = await ctx.accountManager.getAccount(did as Did, {
    includeDeactivated: true,
    includeTakenDown: true,
  })
  if (!account) throw new Error(`no account ${did}`)
  const appPasswords = (await ctx.accountManager.db.db
    .selectFrom('app_password')
    .select(['name', 'passwordScrypt', 'createdAt', 'privileged'])
    .where('did', '=', did)
    .execute()) as { name: string; passwordScrypt: string; createdAt: string; privileged: 0 | 1 }[]
  const codes = await ctx.accountManager.getAccountInvitesCodes(did as Did)
  const inviteCodes = codes.filter((c) => !c.disabled && c.available > c.uses.length).map((c) => c.code)
  return {
    ...(account.email && { email: account.email, emailConfirmed: account.emailConfirmedAt !== null }),
    ...(inviteCodes.length > 0 && { inviteCodes }),
    ...(appPasswords.length > 0 && {
      appPasswords: appPasswords.map((p) => ({ ...p, privileged: p.privileged === 1 })),
    }),
  }
}

/**
 * Applies a received private state to an account created for the transfer. The email (with its
 * confirmation) and app passwords in the reference format are imported. The account password is
 * not part of 0014's private state: the account gets an unusable random hash, and the user sets
 * a password through the PDS's reset-password email, sent to the imported address. Invite codes
 * are this server's to issue and are not imported.
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
  const appPasswords = (state.appPasswords ?? []).filter(isReferenceAppPassword)
  for (const p of appPasswords) {
    await db
      .insertInto('app_password')
      .values({ did, ...p, privileged: p.privileged ? 1 : 0 } as never)
      .onConflict((oc) => oc.doNothing())
      .execute()
  }
}

function isReferenceAppPassword(
  value: Record<string, unknown>,
): value is Record<string, unknown> & ReferenceAppPassword {
  return (
    typeof value.name === 'string' &&
    typeof value.passwordScrypt === 'string' &&
    /^[0-9a-f]+:[0-9a-f]+$/.test(value.passwordScrypt) &&
    typeof value.createdAt === 'string' &&
    typeof value.privileged === 'boolean'
  )
}
