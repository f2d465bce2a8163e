import { describe, expect, it } from 'vitest'
import type { HeldBlocks, RepoStaging, VerifiedBlock } from '../src/account-sink.ts'
import { LayeredStaging } from '../src/layered-staging.ts'

const key = (cid: Uint8Array) => Buffer.from(cid).toString('hex')
const block = (n: number): VerifiedBlock => ({ cid: Uint8Array.of(1, n), bytes: Uint8Array.of(n, n, n) })

/** A staging in memory that counts its writes. */
function memoryStaging() {
  const blocks = new Map<string, Uint8Array>()
  const state = { puts: 0, discarded: false }
  const staging: RepoStaging = {
    async put(batch) {
      state.puts++
      for (const b of batch) blocks.set(key(b.cid), b.bytes)
    },
    async get(cid) {
      return blocks.get(key(cid))
    },
    async discard() {
      state.discarded = true
      blocks.clear()
    },
  }
  return { staging, blocks, state }
}

function heldRepo(blocks: VerifiedBlock[]) {
  const map = new Map(blocks.map((b) => [key(b.cid), b.bytes]))
  const state = { reads: 0, closed: false }
  const held: HeldBlocks = {
    async get(cid) {
      state.reads++
      return map.get(key(cid))
    },
    async close() {
      state.closed = true
    },
  }
  return { held, state }
}

describe('LayeredStaging: a repo diff verified over the held repo', () => {
  it('serves the diff first, then held blocks, and copies each held block it served into the staging', async () => {
    const diff = memoryStaging()
    const { held, state } = heldRepo([block(1), block(2), block(3)])
    const layered = new LayeredStaging(diff.staging, held)
    await layered.put([{ cid: block(2).cid, bytes: Uint8Array.of(9) }])
    // The diff's version wins: the held repo is not even asked.
    expect(await layered.get(block(2).cid)).toEqual(Uint8Array.of(9))
    expect(state.reads).toBe(0)
    expect(await layered.get(block(1).cid)).toEqual(block(1).bytes)
    // Asked twice, read once from the held repo.
    expect(await layered.get(block(1).cid)).toEqual(block(1).bytes)
    expect(state.reads).toBe(1)
    await layered.finish()
    // Block 3 was never reached from the new commit: it stays behind.
    expect([...diff.blocks.keys()].sort()).toEqual([key(block(1).cid), key(block(2).cid)])
    expect(state.closed).toBe(true)
  })

  it('counts blocks neither has, so that an incomplete diff can be told from an invalid repo', async () => {
    const layered = new LayeredStaging(memoryStaging().staging, heldRepo([block(1)]).held)
    expect(await layered.get(block(7).cid)).toBeUndefined()
    expect(layered.missing).toBe(1)
  })

  it('copies in batches, not one write per block', async () => {
    const held = Array.from({ length: 1200 }, (_, i) => ({
      cid: Uint8Array.of(2, i >> 8, i & 0xff),
      bytes: Uint8Array.of(i & 0xff),
    }))
    const diff = memoryStaging()
    const layered = new LayeredStaging(diff.staging, heldRepo(held).held)
    for (const b of held) await layered.get(b.cid)
    await layered.finish()
    expect(diff.blocks.size).toBe(1200)
    expect(diff.state.puts).toBe(3)
  })

  it('discard drops the staging and lets go of the held repo, leaving it as it was', async () => {
    const diff = memoryStaging()
    const held = heldRepo([block(1)])
    const layered = new LayeredStaging(diff.staging, held.held)
    await layered.get(block(1).cid)
    await layered.discard()
    expect(diff.state.discarded).toBe(true)
    expect(held.state.closed).toBe(true)
    expect(diff.blocks.size).toBe(0)
  })
})
