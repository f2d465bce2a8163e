import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net'

/** What the proxy does to the bytes the server sends on one connection. */
export type Fault =
  | { kind: 'none' }
  /** Both sockets are destroyed once `at` response bytes have passed (a reset connection). */
  | { kind: 'cut'; at: number }
  /** The byte at offset `at` of the response has its bits `mask` flipped. */
  | { kind: 'corrupt'; at: number; mask: number }
  /** Forwarding stops for `ms` once `at` bytes have passed, then goes on. */
  | { kind: 'stall'; at: number; ms: number }

export interface FaultProxy {
  url: string
  /** Faults applied, in connection order. */
  readonly applied: Fault[]
  close(): Promise<void>
}

/**
 * A TCP proxy between two PDSes that injects one fault per connection into the server's
 * response bytes (offsets count from the start of the connection's response stream, HTTP
 * headers included). Each new connection takes the next fault from `plan`.
 */
export async function startFaultProxy(target: string, plan: () => Fault): Promise<FaultProxy> {
  const { hostname, port } = new URL(target)
  const applied: Fault[] = []
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    const fault = plan()
    applied.push(fault)
    const upstream = connect({ host: hostname, port: Number(port) })
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
      s.on('error', () => {
        client.destroy()
        upstream.destroy()
      })
    }
    client.pipe(upstream)
    // After a cut the sockets are gone while chunks may still be queued.
    const send = (bytes: Buffer, done?: () => void) => {
      if (client.writable) client.write(bytes, done)
    }
    let passed = 0
    let fired = false
    upstream.on('data', (chunk: Buffer) => {
      const start = passed
      passed += chunk.length
      if (fault.kind === 'none' || fired || fault.at >= passed) {
        send(chunk)
        return
      }
      fired = true
      const offset = Math.max(0, fault.at - start)
      if (fault.kind === 'cut') {
        send(chunk.subarray(0, offset), () => {
          client.destroy()
          upstream.destroy()
        })
      } else if (fault.kind === 'corrupt') {
        const copy = Buffer.from(chunk)
        copy[offset] = (copy[offset] as number) ^ fault.mask
        send(copy)
      } else {
        send(chunk.subarray(0, offset))
        upstream.pause()
        setTimeout(() => {
          send(chunk.subarray(offset))
          upstream.resume()
        }, fault.ms).unref()
      }
    })
    upstream.on('end', () => client.end())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    applied,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}
