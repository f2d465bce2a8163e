import type { AppContext } from '@atproto/pds'
import { type AlertSink, formatAlert, type IdentityAlert } from '@pds-transfer/identity'

/**
 * An alert sink that emails the account's own address through the reference PDS's mailer: the
 * same nodemailer transporter and sender (`PDS_EMAIL_SMTP_URL`, `PDS_EMAIL_FROM_ADDRESS`) that
 * send its sign-in and PLC codes, so the operator configures nothing more. The mailer's templates
 * are fixed (codes and links), so the alert goes as plain text through its transporter. Without
 * SMTP the PDS's transporter only logs messages (`jsonTransport`), as it does for its codes.
 */
export function pdsMailerSink(
  ctx: Pick<AppContext, 'accountManager' | 'mailer' | 'cfg'>,
  options: { lead?: (alert: IdentityAlert) => string } = {},
): AlertSink {
  return {
    name: 'email',
    async send(alert) {
      const account = await ctx.accountManager.getAccount(alert.did as `did:plc:${string}`, {
        includeDeactivated: true,
        includeTakenDown: true,
      })
      if (!account?.email) throw new Error(`${alert.did} has no email address here to alert`)
      const lead = options.lead?.(alert)
      await ctx.mailer.transporter.sendMail({
        to: account.email,
        ...(ctx.cfg.email?.fromAddress && { from: ctx.cfg.email.fromAddress }),
        subject: `Your identity${account.handle ? ` @${account.handle}` : ''} was changed${alert.expected ? '' : ' without you'}`,
        text: [...(lead ? [lead, ''] : []), formatAlert(alert)].join('\n'),
      })
    },
  }
}
