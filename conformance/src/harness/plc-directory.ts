import type { AddressInfo } from 'node:net'
import { Database, PlcServer } from '@did-plc/server'

/** An in-process PLC directory (in-memory database) on a loopback port. */
export interface PlcDirectory {
  url: string
  close(): Promise<void>
}

export async function startPlcDirectory(): Promise<PlcDirectory> {
  const server = PlcServer.create({ db: Database.mock(), port: 0 })
  const http = await server.start()
  const { port } = http.address() as AddressInfo
  return { url: `http://127.0.0.1:${port}`, close: () => server.destroy() }
}
