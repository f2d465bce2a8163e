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

/**
 * `stream` with `beforeRead` run before its first chunk is read (a slow disk, a read error, a
 * count of real reads). Closing it unread (`return()`, as the source's existence probe does)
 * closes `stream` too, so an override leaks no open file.
 */
export function onFirstRead(
  stream: AsyncIterable<Uint8Array>,
  beforeRead: () => void | Promise<void>,
): AsyncIterable<Uint8Array> {
  // A Node stream is closed by destroy; an unstarted iterator's return() would leave its file open.
  const close = async (inner: AsyncIterator<Uint8Array>) => {
    const closable = stream as { destroy?: () => void }
    if (typeof closable.destroy === 'function') closable.destroy()
    else await inner.return?.()
  }
  return {
    [Symbol.asyncIterator]() {
      const inner = stream[Symbol.asyncIterator]()
      let started = false
      return {
        async next() {
          if (!started) {
            started = true
            try {
              await beforeRead()
            } catch (err) {
              await close(inner)
              throw err
            }
          }
          return inner.next()
        },
        async return() {
          await close(inner)
          return { done: true, value: undefined }
        },
      }
    },
  }
}
