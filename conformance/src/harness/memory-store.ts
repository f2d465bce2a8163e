/**
 * A `Map` as the async key-value store `@atproto/oauth-client-node` takes for its state and
 * sessions: for one process that signs in and forgets (the CLI, tests), nothing durable.
 */
export function memoryStore<V>(map: Map<string, V> = new Map()) {
  return {
    async get(key: string) {
      return map.get(key)
    },
    async set(key: string, value: V) {
      map.set(key, value)
    },
    async del(key: string) {
      map.delete(key)
    },
  }
}
