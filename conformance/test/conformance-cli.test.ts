import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NSID } from '@pds-transfer/core'
import { bearerSourceClient, createTransferId } from '@pds-transfer/destination'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from '../src/cli-main.ts'
import { type DestinationServer, startDestinationServer } from '../src/harness/destination-server.ts'
import { startJsonRewritingProxy } from '../src/harness/json-rewriting-proxy.ts'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import { type RewritingProxy, renumber, startRewritingProxy } from '../src/harness/rewriting-proxy.ts'
import { COMPLETE_HOOK_PATH, START_HOOK_PATH } from '../src/harness/start-hook.ts'
import {
  type ConformanceReport,
  inspectCapture,
  readCapture,
  recordExport,
  writeCapture,
} from '../src/suite/index.ts'
import { type SelfSource, startSelfSource } from '../src/suite/self-source.ts'

const BIN = fileURLToPath(new URL('../bin/pds-transfer-conformance.mjs', import.meta.url))

/** Runs the CLI in-process (the same `runCli` the bin calls), returning exit code and output. */
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = ''
  let stderr = ''
  const code = await runCli(args, {
    out: (t) => {
      stdout += t.endsWith('\n') ? t : `${t}\n`
    },
    err: (t) => {
      stderr += t
    },
  })
  return { code, stdout, stderr }
}

describe('pds-transfer-conformance CLI (black-box modes over HTTP)', () => {
  let plcDir: PlcDirectory
  let self: SelfSource
  let broken: RewritingProxy
  let dest: DestinationServer
  let dir: string
  let keyFile: string

  beforeAll(async () => {
    plcDir = await startPlcDirectory()
    self = await startSelfSource({ plc: plcDir })
    broken = await startRewritingProxy(self.source.url, (frames) =>
      frames.map((f) => renumber(f, f.frameNumber + 1)),
    )
    dest = await startDestinationServer({ plc: plcDir, startHook: true })
    dir = await mkdtemp(join(tmpdir(), 'pds-transfer-cli-'))
    keyFile = join(dir, 'key.jwk')
    await writeFile(keyFile, JSON.stringify(self.target.recipientKey))
  })
  afterAll(async () => {
    await dest?.close()
    await broken?.close()
    await self?.close()
    await plcDir?.close()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  const sourceArgs = (url: string) => [
    '--did',
    self.target.did,
    '--token',
    self.token,
    '--key',
    keyFile,
    '--plc',
    plcDir.url,
    ...(url ? ['--source', url] : []),
  ]

  it('--source: exit 0 and a JSON report with every check, against our source', async () => {
    const otherKeyFile = join(dir, 'other.jwk')
    await writeFile(otherKeyFile, JSON.stringify(self.target.otherClient?.recipientKey))
    const other = [
      '--other-token',
      self.otherToken,
      '--other-key',
      otherKeyFile,
      '--other-did',
      self.target.otherDid as string,
    ]
    const run = await cli([...sourceArgs(self.target.url), ...other, '--json', '-'])
    expect(run.code, run.stderr).toBe(0)
    const report = JSON.parse(run.stdout) as ConformanceReport
    expect(report.summary).toMatchObject({ fail: 0, mustFailures: 0 })
    const status = (id: string) => report.results.find((r) => r.id === id)?.status
    expect(status('source.errors.transfer-already-active')).toBe('pass')
    expect(report.results.find((r) => r.id === 'source.auth.other-account')?.evidence).toMatch(/hosted here/)
    expect(report.results.map((r) => r.id)).toContain('source.export.aead')
    expect(run.stderr).toMatch(/PASS {4}MUST/)
  })

  it('--source: exit 1 naming source.export.frame-numbers against a variant numbering frames from 1', async () => {
    const run = await cli([...sourceArgs(broken.url), '--json', '-'])
    expect(run.code).toBe(1)
    const report = JSON.parse(run.stdout) as ConformanceReport
    expect(report.results.filter((r) => r.status === 'fail').map((r) => r.id)).toEqual([
      'source.export.frame-numbers',
    ])
  })

  it('--source --dialect draft: exit 0 and every draft check, against our source (bearer token)', async () => {
    const run = await cli([
      ...sourceArgs(self.target.url),
      '--dialect',
      'draft',
      '--other-did',
      self.target.otherDid as string,
      '--json',
      '-',
    ])
    expect(run.code, run.stderr).toBe(0)
    const report = JSON.parse(run.stdout) as ConformanceReport
    expect(report.summary).toMatchObject({ fail: 0, mustFailures: 0 })
    expect(report.results.filter((r) => r.status === 'pass').map((r) => r.id)).toEqual([
      'source.draft.export.answer',
      'source.draft.export.no-credentials',
      'source.draft.capabilities.intersection',
      'source.draft.auth.probe',
      'source.draft.auth.other-account',
      'source.draft.resume.requires-resumable',
    ])
  })

  it('--source --dialect draft: exit 1 naming the check a broken draft source fails', async () => {
    // Capabilities echoed as asked: the unknown token kept.
    const echo = await startJsonRewritingProxy(self.source.url, async (call) => {
      if (call.nsid !== NSID.exportAccount || call.status !== 200) return undefined
      const asked = (call.request as { capabilities?: string[] }).capabilities ?? ['base']
      return { status: 200, json: { ...(call.json as object), capabilities: asked } }
    })
    try {
      const run = await cli([...sourceArgs(echo.url), '--dialect', 'draft', '--json', '-'])
      expect(run.code).toBe(1)
      const report = JSON.parse(run.stdout) as ConformanceReport
      const failed = report.results.filter((r) => r.status === 'fail')
      expect(failed.map((r) => [r.id, r.level])).toEqual([['source.draft.capabilities.intersection', 'MUST']])
      expect(failed[0]?.evidence).toMatch(/x-conformance-unknown.*the unknown token was kept/)
    } finally {
      await echo.close()
    }
  })

  it('--dialect other, or draft without an account: exit 2 with a clear message', async () => {
    expect((await cli(['--source', self.target.url, '--dialect', 'v3'])).stderr).toMatch(
      /--dialect must be v1 or draft/,
    )
    const none = await cli(['--source', self.target.url, '--dialect', 'draft'])
    expect(none.code).toBe(2)
    expect(none.stderr).toMatch(/give --handle \(and --password\) or --did and --token/)
  })

  it('capture then inspect: a clean capture, and one whose violations are named', async () => {
    const good = join(dir, 'good')
    expect((await cli(['capture', ...sourceArgs(self.target.url), '--out', good])).code).toBe(0)
    const clean = await inspectCapture(await readCapture(good))
    expect(clean.analysis.violations).toEqual([])
    expect(clean.text).toMatch(/repo: root \S+, rev \S+, 60 records, signature ok/)

    const bad = join(dir, 'bad')
    const client = bearerSourceClient(broken.url, self.token)
    const { did, recipientKey } = self.target
    await writeCapture(bad, await recordExport({ client, did, transferId: createTransferId(), recipientKey }))
    const named = await cli(['inspect', bad, '--json', '-'])
    expect(named.code).toBe(1)
    const out = JSON.parse(named.stdout) as { violations: { code: string }[] }
    expect(new Set(out.violations.map((v) => v.code))).toEqual(new Set(['FrameNumbering']))
  })

  it('--destination with the start and complete hooks: exit 0 against our destination', async () => {
    const run = await cli([
      '--destination',
      dest.url,
      '--start-hook',
      `${dest.url}${START_HOOK_PATH}`,
      '--complete-hook',
      `${dest.url}${COMPLETE_HOOK_PATH}`,
      '--plc',
      plcDir.url,
      '--json',
      '-',
    ])
    expect(run.code, run.stderr).toBe(0)
    const report = JSON.parse(run.stdout) as ConformanceReport
    // Plain HTTP on loopback; the completion check runs through the complete hook.
    expect(report.results.filter((r) => r.status === 'skip').map((r) => r.id)).toEqual([
      'destination.transport.https',
    ])
    expect(report.results.find((r) => r.id === 'destination.complete.hostile-operation')?.status).toBe('pass')
    expect(report.summary).toMatchObject({ fail: 0 })
  })

  it('--destination --dialect draft: exit 0 against our destination, every draft check passing', async () => {
    const run = await cli([
      '--destination',
      dest.url,
      '--dialect',
      'draft',
      '--start-hook',
      `${dest.url}${START_HOOK_PATH}`,
      '--complete-hook',
      `${dest.url}${COMPLETE_HOOK_PATH}`,
      '--plc',
      plcDir.url,
      '--json',
      '-',
    ])
    expect(run.code, run.stderr).toBe(0)
    const report = JSON.parse(run.stdout) as ConformanceReport
    expect(report.results.map((r) => [r.id, r.status])).toEqual([
      ['destination.draft.accepts.honest', 'pass'],
      ['destination.draft.rejects.car-wrong-key', 'pass'],
      ['destination.draft.rejects.car-other-did', 'pass'],
      ['destination.draft.rejects.private-state-invalid', 'pass'],
      ['destination.draft.rejects.preferences-item-invalid', 'pass'],
      ['destination.draft.rejects.getblob-wrong-bytes', 'pass'],
      ['destination.draft.complete.drops-user-key', 'pass'],
      ['destination.draft.complete.changes-handle', 'pass'],
    ])
  })

  it("self: the draft's checks run too, on a source of their own, completion included", async () => {
    const run = await cli(['self', '--only', 'source.draft', '--json', '-'])
    expect(run.code, run.stderr).toBe(0)
    const report = JSON.parse(run.stdout) as ConformanceReport
    expect(report.results.map((r) => [r.id, r.status])).toEqual([
      ['source.draft.transport.https', 'skip'],
      ['source.draft.export.answer', 'pass'],
      ['source.draft.export.no-credentials', 'pass'],
      ['source.draft.capabilities.intersection', 'pass'],
      ['source.draft.auth.probe', 'pass'],
      ['source.draft.auth.other-account', 'pass'],
      ['source.draft.resume.requires-resumable', 'pass'],
      ['source.draft.complete.refuses-dropping-user-key', 'pass'],
      ['source.draft.complete.plc-operation', 'pass'],
    ])
  })

  it('self: the completion checks run, against its own throwaway account', async () => {
    const run = await cli([
      'self',
      '--only',
      'source.complete,source.errors.account-deactivated,destination.complete',
      '--json',
      '-',
    ])
    expect(run.code, run.stderr).toBe(0)
    const report = JSON.parse(run.stdout) as ConformanceReport
    expect(report.results.map((r) => [r.id, r.status])).toEqual([
      ['source.complete.plc-operation', 'pass'],
      ['source.errors.account-deactivated', 'pass'],
      ['destination.complete.hostile-operation', 'pass'],
    ])
    expect(report.results[0]?.evidence).toMatch(/submitted to PLC/)
  })

  it('vectors: each vector is a named MUST check', async () => {
    const run = await cli(['vectors', '--json', '-'])
    expect(run.code, run.stderr).toBe(0)
    const report = JSON.parse(run.stdout) as ConformanceReport
    expect(report.results.length).toBeGreaterThan(20)
    expect(report.results.map((r) => r.id)).toContain('vectors.negative-vectors.frame-content-type-swapped')
    expect(report.results.every((r) => r.level === 'MUST' && r.status === 'pass')).toBe(true)
  })

  it('the installed bin: bad usage is exit 2 with a clear message', async () => {
    const run = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(process.execPath, [BIN, '--source', 'not a url'], { timeout: 30_000 }, (err, _out, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
      )
    })
    expect(run.code).toBe(2)
    expect(run.stderr).toMatch(/--source must be a URL/)
  })
})
