import type { DecodedFrame } from '@pds-transfer/core'

/**
 * Hands a frame's plaintext to `consume` and makes sure the whole frame was read. A consumer
 * that fails part-way read unauthenticated bytes, so the rest of the frame is read before its
 * error is believed: if the stream itself is bad (tag fails, stream cut), that is the cause
 * reported, not the garbled content it produced.
 */
export async function consumeFrame<T>(
  frame: DecodedFrame,
  consume: (plaintext: AsyncIterable<Uint8Array>) => Promise<T>,
): Promise<T> {
  const iterator = frame.plaintext()[Symbol.asyncIterator]()
  // A stream error may reach us wrapped by the consumer (a CAR parser's "unexpected end"):
  // keep the original so it is the one reported.
  let streamError: unknown
  const next = async () => {
    try {
      return await iterator.next()
    } catch (err) {
      streamError ??= err
      throw err
    }
  }
  // No `return()`: a consumer that stops early must not close the frame under us.
  const shielded: AsyncIterable<Uint8Array> = { [Symbol.asyncIterator]: () => ({ next }) }
  let result: T
  try {
    result = await consume(shielded)
  } catch (err) {
    await drain(next).catch(() => {})
    throw streamError ?? err
  }
  await drain(next)
  return result
}

async function drain(next: () => Promise<IteratorResult<Uint8Array>>): Promise<void> {
  for (;;) if ((await next()).done) return
}
