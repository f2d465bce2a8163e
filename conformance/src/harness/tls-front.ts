import { execFile } from 'node:child_process'
import dns from 'node:dns'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { request } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { getCACertificates, setDefaultCACertificates } from 'node:tls'
import { promisify } from 'node:util'

/**
 * A destination served as a deployment serves it: `https://<name>` (port 443, no port in the
 * URL) through a TLS proxy in front of its plain-HTTP server, so that its OAuth client_id is a
 * public, conventional one (`https://<name>/oauth-client-metadata.json`) whose metadata sources
 * fetch and show on their consent screens. Loopback only: the name resolves to a 127.x address
 * of its own for this process (`dns.lookup`) and for Chromium (`chromiumArgs`); nothing asks a
 * DNS server. The certificate is self-signed and trusted by this process only while it runs.
 *
 * Needs to bind port 443 (root, or `net.ipv4.ip_unprivileged_port_start` ≤ 443) and `openssl`
 * for the certificate.
 */
export interface TlsFront {
  /** `https://<name>` */
  url: string
  name: string
  /** The loopback address the name stands for. */
  address: string
  /** Chromium flags mapping the name to the address and accepting the self-signed certificate. */
  chromiumArgs: string[]
  close(): Promise<void>
}

export async function startTlsFront(name: string, target: string): Promise<TlsFront> {
  const dir = await mkdtemp(join(tmpdir(), 'pds-transfer-tls-'))
  try {
    await promisify(execFile)('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-addext',
      `subjectAltName=DNS:${name}`,
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
    ])
  } catch (err) {
    await rm(dir, { recursive: true, force: true })
    throw new Error(`the TLS front needs openssl for its certificate: ${(err as Error).message}`)
  }
  const [key, cert] = await Promise.all([readFile(join(dir, 'key.pem')), readFile(join(dir, 'cert.pem'))])
  await rm(dir, { recursive: true, force: true })

  const to = new URL(target)
  const server = createHttpsServer({ key, cert }, (req, res) => {
    const upstream = request(
      {
        host: to.hostname,
        port: to.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, 'x-forwarded-proto': 'https', 'x-forwarded-host': name },
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.pipe(res)
      },
    )
    upstream.on('error', () => {
      if (!res.headersSent) res.writeHead(502)
      res.end()
    })
    req.pipe(upstream)
  })
  // An address of its own among 127/8, so that parallel runs on one machine do not meet on :443.
  const address = `127.${1 + Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 250)}.${1 + Math.floor(Math.random() * 250)}`
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'EACCES'
          ? new Error(
              'the TLS front needs to bind port 443: run as root, or lower net.ipv4.ip_unprivileged_port_start',
            )
          : err,
      ),
    )
    server.listen(443, address, () => resolve())
  })

  // The name's DNS entry and its certificate's trust, for this process: node:net resolves through
  // dns.lookup (the reference PDS's safe fetch installs its own dispatcher, so a dispatcher of
  // ours would not be asked), and TLS trusts the default CA list.
  const resolve = dns.lookup
  const lookup = ((host: string, options: unknown, callback: unknown) => {
    const done = (typeof options === 'function' ? options : callback) as (...args: unknown[]) => void
    const opts = (typeof options === 'object' && options) || {}
    if (host !== name) return (resolve as (...args: unknown[]) => void)(host, options, callback)
    if ((opts as { all?: boolean }).all) process.nextTick(done, null, [{ address, family: 4 }])
    else process.nextTick(done, null, address, 4)
  }) as typeof dns.lookup
  dns.lookup = lookup
  const trusted = getCACertificates('default')
  setDefaultCACertificates([...trusted, cert.toString()])

  return {
    url: `https://${name}`,
    name,
    address,
    chromiumArgs: [`--host-resolver-rules=MAP ${name} ${address}`, '--ignore-certificate-errors'],
    async close() {
      dns.lookup = resolve
      setDefaultCACertificates(trusted)
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
