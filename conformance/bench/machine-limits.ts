import { createCipheriv, createHash, randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import Fastify from 'fastify'
import { request } from 'undici'

/** One measured figure. */
export interface Rate {
  name: string
  mbPerSecond: number
}

const CHUNK = 1 << 20

function timeIt(bytes: number, run: () => void): number {
  const start = performance.now()
  run()
  return bytes / 1e6 / ((performance.now() - start) / 1000)
}

/** What this machine can do at all: the ceiling our transfer is compared with. */
export async function machineLimits(mib: number): Promise<Rate[]> {
  const chunk = randomBytes(CHUNK)
  const bytes = mib * CHUNK
  const aead = (cipher: 'aes-128-gcm' | 'chacha20-poly1305', keyLength: number) =>
    timeIt(bytes, () => {
      // The same AEAD path the frames use (GCM and ChaCha20-Poly1305 both default to a 16-byte tag).
      const c = createCipheriv(cipher as 'aes-128-gcm', randomBytes(keyLength), randomBytes(12))
      for (let i = 0; i < mib; i++) c.update(chunk)
      c.final()
    })
  const sha = timeIt(bytes, () => {
    const h = createHash('sha256')
    for (let i = 0; i < mib; i++) h.update(chunk)
    h.digest()
  })
  return [
    { name: 'AES-128-GCM streaming', mbPerSecond: aead('aes-128-gcm', 16) },
    { name: 'ChaCha20-Poly1305 streaming', mbPerSecond: aead('chacha20-poly1305', 32) },
    { name: 'SHA-256', mbPerSecond: sha },
    { name: 'loopback HTTP fastify -> undici', mbPerSecond: await loopbackHttp(mib, chunk) },
  ]
}

async function loopbackHttp(mib: number, chunk: Buffer): Promise<number> {
  const app = Fastify()
  app.get('/bytes', (_req, reply) => {
    async function* body() {
      for (let i = 0; i < mib; i++) yield chunk
    }
    return reply.type('application/octet-stream').send(Readable.from(body()))
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  try {
    const { port } = app.server.address() as AddressInfo
    const start = performance.now()
    const res = await request(`http://127.0.0.1:${port}/bytes`)
    let n = 0
    for await (const c of res.body) n += (c as Buffer).length
    return n / 1e6 / ((performance.now() - start) / 1000)
  } finally {
    await app.close()
  }
}
