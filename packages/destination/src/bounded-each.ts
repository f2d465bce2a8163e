/**
 * Bounded parallelism. Invariant: at most `concurrency` tasks run at once; after the first
 * failure no new task starts, and the failure is thrown only once every running task has
 * settled (so no task is still writing when the caller cleans up or records the failure).
 */

/** Runs `task` for each item, at most `concurrency` at a time, in item order. */
export async function forEachBounded<T>(
  items: Iterable<T>,
  concurrency: number,
  task: (item: T) => Promise<void>,
): Promise<void> {
  const iterator = items[Symbol.iterator]()
  let failure: { error: unknown } | undefined
  const worker = async () => {
    for (let next = iterator.next(); !next.done && !failure; next = iterator.next()) {
      try {
        await task(next.value)
      } catch (error) {
        failure ??= { error }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker))
  if (failure) throw failure.error
}
