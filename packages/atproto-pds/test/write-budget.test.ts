import { describe, expect, it } from 'vitest'
import { WriteBudget } from '../src/write-budget.ts'

describe('WriteBudget', () => {
  it('lets a reservation past the limit wait until enough is released', async () => {
    const budget = new WriteBudget(100)
    await budget.reserve(60)
    let second = false
    const waiting = budget.reserve(60).then(() => {
      second = true
    })
    await new Promise((resolve) => setImmediate(resolve))
    expect(second).toBe(false)
    expect(budget.inFlight).toBe(60)
    budget.release(60)
    await waiting
    expect(second).toBe(true)
    expect(budget.inFlight).toBe(60)
  })

  it('never blocks a single write larger than the limit when nothing else is queued', async () => {
    const budget = new WriteBudget(10)
    await budget.reserve(1000)
    expect(budget.inFlight).toBe(1000)
    budget.release(1000)
    expect(budget.inFlight).toBe(0)
  })

  it('hands written buffers out again, keeping no more than the limit', () => {
    const budget = new WriteBudget(2048, 1024)
    const [a, b, c] = [budget.buffer(), budget.buffer(), budget.buffer()]
    expect(a.length).toBe(1024)
    for (const buffer of [a, b, c]) budget.recycle(buffer)
    const again = [budget.buffer(), budget.buffer(), budget.buffer()]
    expect(again.filter((buffer) => buffer === a || buffer === b || buffer === c)).toHaveLength(2)
  })
})
