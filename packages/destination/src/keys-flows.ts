import { randomBytes } from 'node:crypto'

/** One person's "add a key of your own" at /keys, from the sign-in to the key first at PLC. */
export interface KeysFlow {
  /** Random and unguessable: the flow's pages are addressed by it (`/keys/add/<id>`). */
  id: string
  did: string
  /** The account's PDS, where the person signs in and the code is asked for. */
  pds: string
  /** The public key to put first. */
  userKey: string
  createdAt: number
  /** When the PDS was last asked to email a code (a reload does not ask again). */
  codeRequestedAt?: number
  /** The rotation keys PLC lists once the key is first. */
  result?: { rotationKeys: string[]; changed: boolean }
}

/** How long a flow may take: the code expires in minutes; a person may come back within the hour. */
const FLOW_TTL_MS = 60 * 60_000
/** More open flows than this are not a person adding a key: the oldest go. */
const MAX_FLOWS = 10_000

/**
 * The open /keys flows, in memory: each lasts minutes and holds nothing secret (the OAuth session
 * is in the authorizer's durable store, the private key never reaches the server), so a restart
 * only asks the person to start again.
 */
export class KeysFlows {
  private readonly flows = new Map<string, KeysFlow>()

  constructor(private readonly now: () => number = Date.now) {}

  open(flow: Pick<KeysFlow, 'did' | 'pds' | 'userKey'>): KeysFlow {
    this.sweep()
    const opened: KeysFlow = { ...flow, id: randomBytes(18).toString('base64url'), createdAt: this.now() }
    this.flows.set(opened.id, opened)
    return opened
  }

  get(id: string): KeysFlow | undefined {
    const flow = this.flows.get(id)
    return flow && this.now() - flow.createdAt < FLOW_TTL_MS ? flow : undefined
  }

  private sweep(): void {
    for (const [id, flow] of this.flows)
      if (this.now() - flow.createdAt >= FLOW_TTL_MS || this.flows.size >= MAX_FLOWS) this.flows.delete(id)
  }
}
