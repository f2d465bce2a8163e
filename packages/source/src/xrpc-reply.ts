import { TransferError } from '@pds-transfer/core'
import type { FastifyReply } from 'fastify'

/** Extra header for 401 replies (RFC 9449 §7.1: `WWW-Authenticate: DPoP ...`). */
export class UnauthenticatedError extends TransferError {
  constructor(
    message: string,
    readonly wwwAuthenticate: string,
    options?: ErrorOptions,
  ) {
    super('TransferNotAuthorized', message, { ...options, status: 401 })
  }
}

/** Sends any thrown value as an XRPC error body; unknown errors become `fallback` (500) without internals. */
export function sendXrpcError(reply: FastifyReply, err: unknown, fallback: 'ExportFailed' = 'ExportFailed') {
  const error =
    err instanceof TransferError ? err : new TransferError(fallback, 'internal error', { cause: err })
  if (!(err instanceof TransferError)) reply.log.error({ err }, 'transfer endpoint failed')
  if (error instanceof UnauthenticatedError) reply.header('www-authenticate', error.wwwAuthenticate)
  return reply.code(error.status).type('application/json').send(error.toJSON())
}
