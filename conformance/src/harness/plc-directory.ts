import type { AddressInfo } from 'node:net'
import { Database, PlcServer } from '@did-plc/server'

/** An in-process PLC directory (in-memory database) on a loopback port. */
export interface PlcDirectory {
  url: string
  /** The same directory by host name: for the reference PDS, whose fetch refuses IP literals. */
  namedUrl: string
  close(): Promise<void>
}

/** Starts one on `port` (default: any free one). */
export async function startPlcDirectory(listenOn = 0): Promise<PlcDirectory> {
  const server = PlcServer.create({ db: Database.mock(), port: listenOn })
  const http = await server.start()
  const { port } = http.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    namedUrl: `http://localhost:${port}`,
    close: () => server.destroy(),
  }
}
