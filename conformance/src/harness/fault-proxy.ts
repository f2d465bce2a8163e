import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net'

/** Which bytes of a connection a fault hits: the client's (request) or the server's (response). */
export type Direction = 'request' | 'response'

/** What the proxy does to the bytes flowing one way on one connection. */
export type Fault =
  | { kind: 'none' }
  /** Both sockets are destroyed once `at` bytes have passed (a reset connection). */
  | { kind: 'cut'; on: Direction; at: number }
  /** The byte at offset `at` has its bits `mask` flipped. */
  | { kind: 'corrupt'; on: Direction; at: number; mask: number }
  /** Forwarding stops for `ms` once `at` bytes have passed, then goes on. */
  | { kind: 'stall'; on: Direction; at: number; ms: number }

export interface FaultProxy {
  url: string
  /** Faults applied, in connection order. */
  readonly applied: Fault[]
  close(): Promise<void>
}

/**
 * A TCP proxy that injects one fault per connection into the bytes flowing one way (offsets
 * count from the start of that direction's stream on the connection, HTTP headers included;
 * a kept-alive connection carries several requests). Each new connection takes the next fault
 * from `plan`.
 */
export async function startFaultProxy(target: string, plan: () => Fault): Promise<FaultProxy> {
  const { hostname, port } = new URL(target)
  const applied: Fault[] = []
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    const fault = plan()
    applied.push(fault)
    const upstream = connect({ host: hostname, port: Number(port) })
    const reset = () => {
      client.destroy()
      upstream.destroy()
    }
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
      s.on('error', reset)
    }
    const hit = (on: Direction) => (fault.kind !== 'none' && fault.on === on ? fault : undefined)
    relay(client, upstream, hit('request'), reset)
    relay(upstream, client, hit('response'), reset)
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

/** Forwards `from`'s bytes to `to`, applying `fault` (if any) once its offset is reached. */
function relay(
  from: Socket,
  to: Socket,
  fault: Exclude<Fault, { kind: 'none' }> | undefined,
  reset: () => void,
) {
  // After a cut the sockets are gone while chunks may still be queued.
  const send = (bytes: Buffer, done?: () => void) => {
    if (to.writable) to.write(bytes, done)
    else done?.()
  }
  let passed = 0
  let fired = false
  from.on('data', (chunk: Buffer) => {
    const start = passed
    passed += chunk.length
    if (!fault || fired || fault.at >= passed) {
      send(chunk)
      return
    }
    fired = true
    const offset = Math.max(0, fault.at - start)
    if (fault.kind === 'cut') {
      send(chunk.subarray(0, offset), reset)
    } else if (fault.kind === 'corrupt') {
      const copy = Buffer.from(chunk)
      copy[offset] = (copy[offset] as number) ^ fault.mask
      send(copy)
    } else {
      send(chunk.subarray(0, offset))
      from.pause()
      setTimeout(() => {
        send(chunk.subarray(offset))
        from.resume()
      }, fault.ms).unref()
    }
  })
  from.on('end', () => to.end())
}
