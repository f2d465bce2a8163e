import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

/**
 * What the gate does with the next operation POSTed to the PLC directory:
 * `open` forwards it; `drop` holds it and never forwards (PLC never sees it); `swallow`
 * forwards it and holds PLC's answer (PLC accepted it, the sender never hears so); `refuse`
 * answers it 503 (reads still pass); `down` answers every request 503, reads included.
 */
export type PlcGateMode = 'open' | 'drop' | 'swallow' | 'refuse' | 'down'

export interface PlcGate {
  url: string
  mode: PlcGateMode
  /** Operations POSTed through the gate so far, whatever happened to them. */
  posts: number
  /**
   * Resolves when an operation met a closed gate: for `drop` on arrival, for `swallow` once
   * PLC has answered it (with PLC's HTTP status).
   */
  held(): Promise<{ status?: number }>
  close(): Promise<void>
}

/**
 * An HTTP proxy in front of a PLC directory, for crash drills: it lets a test stop a PDS
 * exactly while its PLC operation is in flight (before or after PLC accepted it). Reads
 * always pass.
 */
export async function startPlcGate(target: string): Promise<PlcGate> {
  const sockets = new Set<Socket>()
  const waiters: ((held: { status?: number }) => void)[] = []
  const notify = (held: { status?: number }) => {
    for (const resolve of waiters.splice(0)) resolve(held)
  }
  const gate: PlcGate = {
    url: '',
    mode: 'open',
    posts: 0,
    held: () => new Promise((resolve) => waiters.push(resolve)),
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
  const forward = async (req: IncomingMessage, body: Buffer) => {
    const headers: Record<string, string> = {}
    const type = req.headers['content-type']
    if (type) headers['content-type'] = type
    return fetch(new URL(req.url ?? '/', target), {
      method: req.method ?? 'GET',
      headers,
      ...(body.length > 0 && { body }),
    })
  }
  const reply = async (res: ServerResponse, answer: Response) => {
    res.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/json' })
    res.end(Buffer.from(await answer.arrayBuffer()))
  }
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      if (gate.mode === 'down' || (gate.mode === 'refuse' && req.method === 'POST')) {
        res.writeHead(503, { 'content-type': 'application/json' })
        return res.end(JSON.stringify({ message: 'unavailable' }))
      }
      if (req.method === 'POST') gate.posts++
      const mode = req.method === 'POST' ? gate.mode : 'open'
      if (mode === 'drop') return notify({})
      void forward(req, body).then(
        async (answer) => {
          if (mode === 'swallow') return notify({ status: answer.status })
          await reply(res, answer)
        },
        () => res.destroy(),
      )
    })
  })
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  gate.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return gate
}
