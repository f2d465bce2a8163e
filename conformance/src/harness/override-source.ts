import type { AccountSource } from '@pds-transfer/source'
import type { SqliteAccountStore } from '../store/sqlite-account-store.ts'

/**
 * The test PDS's store as an `AccountSource` with some methods replaced (a slow disk, lost or
 * corrupt blobs, a failing snapshot, a write racing the deactivation). Replacements call
 * through to `store` themselves; everything else is the store's own method.
 */
export function overrideSource(store: SqliteAccountStore, replaced: Partial<AccountSource>): AccountSource {
  return new Proxy(store, {
    get(target, prop, receiver) {
      if (Object.hasOwn(replaced, prop)) return replaced[prop as keyof AccountSource]
      const value = Reflect.get(target, prop, receiver)
      return typeof value === 'function' ? value.bind(target) : value
    },
  }) as AccountSource
}
