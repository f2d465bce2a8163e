import { mkdir } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { isIP } from 'node:net'
import { join } from 'node:path'
import { envToCfg, envToSecrets, PDS, type ServerEnvironment } from '@atproto/pds'
import * as plc from '@did-plc/lib'
import { EXTENSION, NSID, WELL_KNOWN_PATH } from '@pds-transfer/core'
import {
  CLIENT_JWKS_PATH,
  CLIENT_LOGO_PATH,
  CLIENT_METADATA_PATH,
  destinationPlugin,
  type EngineLimits,
  type InboundTransfer,
  KeyRing,
  keysPlugin,
  migratePlugin,
  OAuthSourceAuthorizer,
  oauthClientRoutes,
  PlcDidResolver,
  RecoverCopies,
  recoverPlugin,
  SqliteInboundTransferStore,
  SqliteKeyStore,
  SqliteOAuthStore,
  TransferEngine,
} from '@pds-transfer/destination'
import { deliverAlert } from '@pds-transfer/identity'
import { DestinationKeys, OAuthTransferAuth, SqliteTransferStore, sourcePlugin } from '@pds-transfer/source'
import Fastify, { type FastifyInstance } from 'fastify'
import { pdsMailerSink } from './pds-mailer-sink.ts'
import { loadOrCreateSecrets } from './pds-secrets.ts'
import { forwardPdsUpgrades } from './pds-upgrades.ts'
import { ReferencePdsSink } from './reference-pds-sink.ts'
import { ReferencePdsSource } from './reference-pds-source.ts'

export interface TransferPdsOptions {
  /** Everything the PDS and both transfer roles keep (SQLite files, blobs, secrets). */
  dataDir: string
  /** Loopback port; the public URL is `http://localhost:<port>` (the reference PDS's dev setup). */
  port: number
  plcUrl: string
  /** Handle suffixes this PDS hands out (default `.test`). */
  handleDomains?: string[]
  /** Called with each PLC token the source role creates (there is no SMTP server in development). */
  onPlcToken?: (did: string, token: string) => void
  /** XRPC service that resolves handles typed into /migrate (default: this PDS). */
  handleResolverUrl?: string
  /** Engine limits (tests shorten retry backoff). */
  limits?: Partial<EngineLimits>
  /** Largest copy a person may upload to /recover, in bytes (default 16 GiB). */
  maxUploadBytes?: number
  /** More PDS environment settings. */
  env?: ServerEnvironment
  /**
   * Which exportAccount the source role answers (default both). Without `v1` the well-known
   * document is not served either: the PDS looks like a source of the current draft only
   * (spec/dialect-draft.md), and cannot be a v1 destination.
   */
  sourceDialects?: ('v1' | 'draft')[]
  /** Capabilities the source role offers a draft destination (default: base, preferences, resumable). */
  draftCapabilities?: string[]
  /**
   * The https address a TLS proxy in front serves this PDS's pages at (/migrate, /keys,
   * /recover), as a deployment does. It makes the destination a public OAuth client whose
   * metadata (`oauthClient`) sources fetch and show on their consent screens. Default: the PDS's
   * own `http://localhost:<port>`, a loopback client, which sources can only call "an
   * application on your device".
   */
  pagesUrl?: string
  /** What sources' consent screens show of this destination (public client only; `OAuthSourceAuthorizerOptions`). */
  oauthClient?: { name?: string; logoUri?: string; tosUri?: string; policyUri?: string }
}

/** A running reference PDS with both transfer roles. */
export interface TransferPds {
  url: string
  serviceDid: string
  pds: PDS
  engine: TransferEngine
  /** The destination role's HPKE keys (what its well-known publishes). */
  keys: KeyRing
  /** Where the engine imports accounts (tests probe it: nothing of a refused stream is kept). */
  sink: ReferencePdsSink
  authorizer: OAuthSourceAuthorizer
  /** Copies uploaded to /recover, kept while their restores read them (`sweep` removes the rest). */
  copies: RecoverCopies
  /** Our routes (transfer endpoints of both roles, /migrate, /recover, /keys, client metadata). */
  app: { source: FastifyInstance; destination: FastifyInstance }
  server: Server
  close(): Promise<void>
}

const SOURCE_ROUTES = new Set(
  [NSID.exportAccount, NSID.completeTransfer, NSID.requestPlcToken].map((n) => `/xrpc/${n}`),
)
const STATUS_ROUTE = `/xrpc/${NSID.getTransferStatus}`

/**
 * Starts the reference PDS (`@atproto/pds`, development settings: SQLite, disk blobs, the given
 * PLC directory) with our transfer routes in front of it on one HTTP server: the source role's
 * endpoints, the destination's well-known document, getTransferStatus (the source's answers
 * authenticated callers, the destination's answers by transferId), /migrate and the OAuth client
 * metadata go to fastify; everything else goes to the PDS's own Express app.
 */
export async function startTransferPds(options: TransferPdsOptions): Promise<TransferPds> {
  const { dataDir, port } = options
  assertPlcUrlUsable(options.plcUrl)
  await mkdir(dataDir, { recursive: true })
  const secrets = await loadOrCreateSecrets(dataDir)
  const env: ServerEnvironment = {
    port,
    hostname: 'localhost',
    serviceDid: `did:web:localhost%3A${port}`,
    devMode: true,
    version: '0.5.35',
    dataDirectory: dataDir,
    blobstoreDiskLocation: join(dataDir, 'blobs'),
    didPlcUrl: options.plcUrl,
    jwtSecret: secrets.jwtSecret,
    dpopSecret: secrets.dpopSecret,
    adminPassword: secrets.adminPassword,
    plcRotationKeyK256PrivateKeyHex: secrets.plcRotationKeyHex,
    inviteRequired: false,
    serviceHandleDomains: options.handleDomains ?? ['.test'],
    crawlers: [],
    ...options.env,
  }
  const pds = await PDS.create(envToCfg(env), envToSecrets(env))
  const { ctx } = pds
  const url = ctx.cfg.service.publicUrl
  const serviceDid = ctx.cfg.service.did
  const oauthVerifier = ctx.oauthProvider
  if (!oauthVerifier)
    throw new Error('the PDS runs without its OAuth provider (entryway setups are not supported)')

  const sourceApp = Fastify({ logger: false, forceCloseConnections: true })
  const sourceTransfers = new SqliteTransferStore(join(dataDir, 'transfer-outbound.sqlite'))
  await sourceApp.register(sourcePlugin, {
    source: new ReferencePdsSource(ctx, options.onPlcToken ? { onPlcToken: options.onPlcToken } : {}),
    store: sourceTransfers,
    auth: new OAuthTransferAuth({ verifier: oauthVerifier, publicUrl: url, serviceDid }),
    serviceDid,
    plc: { directoryUrl: options.plcUrl, rotationKey: ctx.plcRotationKey },
    destinationKeys: new DestinationKeys({ allowLoopbackClients: ctx.cfg.service.devMode }),
    serveWellKnown: false,
    serveGetBlob: false,
    ...(options.sourceDialects && { dialects: options.sourceDialects }),
    ...(options.draftCapabilities && { draftCapabilities: options.draftCapabilities }),
  })
  const servesWellKnown = options.sourceDialects?.includes('v1') ?? true

  const inbound = new SqliteInboundTransferStore(join(dataDir, 'transfer-inbound.sqlite'))
  const keyStore = new SqliteKeyStore(join(dataDir, 'transfer-keys.sqlite'))
  const keys = new KeyRing(keyStore, ['HPKE-3', 'HPKE-4'])
  const oauthStore = new SqliteOAuthStore(join(dataDir, 'transfer-oauth.sqlite'))
  // The address people and sources reach the pages and the OAuth client at.
  const pagesUrl = options.pagesUrl ?? url
  const client = options.oauthClient
  const authorizer = await OAuthSourceAuthorizer.create({
    publicUrl: pagesUrl,
    ...(client?.name && { clientName: client.name }),
    ...(client?.logoUri && { logoUri: client.logoUri }),
    ...(client?.tosUri && { tosUri: client.tosUri }),
    ...(client?.policyUri && { policyUri: client.policyUri }),
    store: oauthStore,
    plcDirectoryUrl: options.plcUrl,
    allowHttp: ctx.cfg.service.devMode,
    // No PermissionedDataSink here (the reference PDS hosts no spaces): a grant we could not use is not asked for.
    spaceScope: 'never',
  })
  const resolver = new PlcDidResolver(options.plcUrl)
  const sink = new ReferencePdsSink(ctx, { stagingDir: join(dataDir, 'transfer-staging') })
  const directory = new plc.Client(options.plcUrl)
  const copies = new RecoverCopies(join(dataDir, 'recover-copies'), options.maxUploadBytes)
  const engine = new TransferEngine({
    sink,
    store: inbound,
    keys,
    resolver,
    plc: directory,
    serviceUrl: url,
    rotationKey: ctx.plcRotationKey.did(),
    // A restore resumed after a restart reads its uploaded copy again; a move, its OAuth session.
    restoreClient: async (transfer) =>
      (await copies.restoreClient(transfer)) ?? authorizer.restore(transfer.did),
    ...(options.limits && { limits: options.limits }),
  })
  const destinationApp = Fastify({ logger: false, forceCloseConnections: true })
  const rollbackMail = (transfer: InboundTransfer) =>
    pdsMailerSink(ctx, { lead: () => transfer.rollback?.message ?? '' })
  await destinationApp.register(destinationPlugin, {
    engine,
    keys,
    serviceDid,
    // A rollback is told to the account's email address, through this PDS's own mailer.
    onRollback: (transfer, alert) =>
      deliverAlert(alert, [rollbackMail(transfer)], (_sink, err) =>
        process.stderr.write(
          `rollback of ${transfer.did} detected; the email could not be sent: ${err.message}\n`,
        ),
      ),
    // One document for both roles: the engine's extensions and the source role's.
    extensions: [
      ...new Set([...engine.extensions, EXTENSION.endManifest, EXTENSION.resume, EXTENSION.plcTokenRefresh]),
    ],
  })
  await destinationApp.register(oauthClientRoutes, { authorizer })
  const handleResolverUrl = options.handleResolverUrl ?? url
  await destinationApp.register(migratePlugin, {
    engine,
    keys,
    resolver,
    authorizer,
    publicUrl: pagesUrl,
    serviceDid,
    resolveHandle: (handle) => resolveHandleVia(handleResolverUrl, handle),
    keysPath: '/keys',
    pdsUrl: url,
  })
  await destinationApp.register(recoverPlugin, {
    engine,
    copies,
    plc: directory,
    publicUrl: pagesUrl,
    serviceDid,
    resolveHandle: (handle) => resolveHandleVia(handleResolverUrl, handle),
  })
  await destinationApp.register(keysPlugin, {
    plc: directory,
    authorizer,
    publicUrl: pagesUrl,
    pdsUrl: url,
    resolveHandle: (handle) => resolveHandleVia(handleResolverUrl, handle),
    moveUnderWay: async (did) => (await engine.unfinished(did)) !== undefined,
  })
  await Promise.all([sourceApp.ready(), destinationApp.ready()])

  const route = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0] as string
    if (SOURCE_ROUTES.has(path) || (path === STATUS_ROUTE && req.headers.authorization)) {
      sourceApp.routing(req, res)
    } else if (
      path === STATUS_ROUTE ||
      (path === WELL_KNOWN_PATH && servesWellKnown) ||
      path === '/migrate' ||
      path.startsWith('/migrate/') ||
      path === '/recover' ||
      path.startsWith('/recover/') ||
      path === '/keys' ||
      path.startsWith('/keys/') ||
      path === CLIENT_METADATA_PATH ||
      path === CLIENT_JWKS_PATH ||
      path === CLIENT_LOGO_PATH
    ) {
      destinationApp.routing(req, res)
    } else {
      pds.app(req, res)
    }
  }
  await ctx.sequencer.start()
  const server = createServer(route)
  server.keepAliveTimeout = 90_000
  await forwardPdsUpgrades(pds, server)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve())
  })
  await engine.recover()

  return {
    url,
    serviceDid,
    pds,
    engine,
    keys,
    sink,
    authorizer,
    copies,
    app: { source: sourceApp, destination: destinationApp },
    server,
    async close() {
      await engine.close()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await Promise.all([sourceApp.close(), destinationApp.close()])
      sourceTransfers.close()
      inbound.close()
      keyStore.close()
      oauthStore.close()
      await pds.destroy()
    },
  }
}

/**
 * The reference PDS resolves DIDs with a fetch that refuses IP-literal hosts, even in dev
 * mode: with `http://127.0.0.1:…` as its PLC directory it cannot resolve its own accounts
 * (describeRepo answers 400 "Invalid hostname", DID-based createAccount 500). Said at start-up
 * instead of as those errors later.
 */
function assertPlcUrlUsable(plcUrl: string): void {
  const host = new URL(plcUrl).hostname.replace(/^\[|\]$/g, '')
  if (isIP(host) !== 0) {
    throw new Error(
      `PLC directory ${plcUrl}: the reference PDS refuses IP-literal hosts; use a host name (e.g. http://localhost:${new URL(plcUrl).port || 80})`,
    )
  }
}

async function resolveHandleVia(serviceUrl: string, handle: string): Promise<string | undefined> {
  const res = await fetch(
    `${serviceUrl}/xrpc/com.atproto.identity.resolveHandle?handle=${encodeURIComponent(handle)}`,
  )
  if (!res.ok) return undefined
  const { did } = (await res.json()) as { did?: unknown }
  return typeof did === 'string' ? did : undefined
}
