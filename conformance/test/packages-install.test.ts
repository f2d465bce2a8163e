import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type PlcDirectory, startPlcDirectory } from '../src/harness/plc-directory.ts'
import type { ConformanceReport } from '../src/suite/index.ts'

const run = promisify(execFile)
const ROOT = join(import.meta.dirname, '..', '..')
/** Dependency order: a package's build reads the declarations its dependencies built into dist/. */
const PACKED = [
  'core',
  'source',
  'destination',
  'atproto-pds',
  'archive',
  'backup',
  'identity',
  'conformance',
] as const
/** Installed into the fresh project, their README examples run (atproto-pds's is a server: SERVERS). */
const PACKAGES = ['core', 'source', 'destination', 'archive', 'backup', 'identity'] as const
type Pkg = (typeof PACKED)[number]
/**
 * READMEs with a server example: source and destination embeddings behind our seams, checked by
 * the installed conformance CLI; the reference PDS pair, checked over HTTP.
 */
const SERVERS = ['source', 'destination', 'atproto-pds'] as const
type ServerPkg = (typeof SERVERS)[number]
/** Each package's folder in the workspace. */
const dirOf = (pkg: Pkg) => join(ROOT, pkg === 'conformance' ? 'conformance' : join('packages', pkg))
/** Marks the README block that is run; the block must follow it. */
const MARKER = '<!-- example: run as is by conformance/test/packages-install.test.ts -->'
/** Marks a README's server example: started in the fresh project, then checked from outside. */
const SERVER_MARKER =
  '<!-- server: started by conformance/test/packages-install.test.ts, which checks it there -->'
const ARTIFACTS = join(ROOT, 'test-artifacts', 'packages-install')
const MINUTE = 60_000

interface Readme {
  /** The names of the README's `npm install` line. */
  install: string[]
  /** The runnable example, exactly as written. */
  code: string
  /** What the example prints: the `// …` comment after each `console.log(…)`, in order. */
  expected: string[]
}

function parseReadme(text: string, pkg: string, marker = MARKER): Readme {
  const installLine = text.split('\n').find((l) => l.startsWith('npm install '))
  if (!installLine) throw new Error(`packages/${pkg}/README.md has no npm install line`)
  const at = text.indexOf(marker)
  if (at < 0) throw new Error(`packages/${pkg}/README.md has no ${marker}`)
  const block = /^\s*```js\n([\s\S]*?)\n```/.exec(text.slice(at + marker.length))
  if (!block?.[1]) throw new Error(`packages/${pkg}/README.md: no js block right after the marker`)
  const code = block[1]
  const expected = code
    .split('\n')
    .map((l) => /^\s*console\.log\(.*\) \/\/ (.+)$/.exec(l)?.[1])
    .filter((e) => e !== undefined)
  return { install: installLine.split(/\s+/).slice(2), code, expected }
}

/**
 * What the fresh project sees of this process: the machine's environment (PATH with Node 22,
 * HOME for npm's cache, proxy and CA settings) and Node 22's headers for the native addon
 * (better-sqlite3), but nothing of the workspace: no NODE_OPTIONS (tsx's loader), no pnpm,
 * npm_package_* or vitest variables.
 */
function freshEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (/^(npm_|pnpm_|vitest|tsx_)|^(node_options|node_path|node_env|test)$/i.test(name)) continue
    env[name] = value
  }
  if (process.env.npm_config_nodedir) env.npm_config_nodedir = process.env.npm_config_nodedir
  return env
}

/**
 * Issue 25: the public packages as people get them. Each is built and packed (`pnpm pack`,
 * which runs its prepack build and swaps in `publishConfig.exports`), installed from the
 * tarballs with plain npm into a new project outside the workspace, and its README example
 * is run there with plain `node` and type-checked against the packed declarations. The
 * README's install line is what is installed, so the docs cannot drift from the packages.
 */
describe('packages: pack, install with npm, run the README examples', () => {
  let work: string
  let project: string
  let plcDir: PlcDirectory
  const tarballs = new Map<Pkg, string>()
  const readmes = new Map<Pkg, Readme>()
  const servers = new Map<ServerPkg, Readme>()
  const children: ChildProcess[] = []
  const timings: Record<string, number> = {}

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'pds-transfer-packages-'))
    const packs = join(work, 'tarballs')
    project = join(work, 'embed')
    await mkdir(project)

    let t = Date.now()
    for (const pkg of PACKED) {
      const before = new Set(await readdir(packs).catch(() => []))
      await run('pnpm', ['pack', '--pack-destination', packs], { cwd: dirOf(pkg), timeout: 5 * MINUTE })
      const made = (await readdir(packs)).filter((f) => !before.has(f) && f.endsWith('.tgz'))
      expect(made, `pnpm pack of ${pkg}`).toHaveLength(1)
      tarballs.set(pkg, join(packs, made[0]!))
    }
    for (const pkg of PACKAGES) {
      readmes.set(pkg, parseReadme(await readFile(join(dirOf(pkg), 'README.md'), 'utf8'), pkg))
    }
    for (const pkg of SERVERS) {
      const text = await readFile(join(dirOf(pkg), 'README.md'), 'utf8')
      servers.set(pkg, parseReadme(text, pkg, SERVER_MARKER))
    }
    timings.packMs = Date.now() - t

    // The README install lines, with our packages as tarballs and the rest at the versions we
    // depend on (what the examples were tested with), plus @types/node for the type check.
    const versions = new Map<string, string>()
    for (const pkg of PACKED) {
      const manifest = JSON.parse(await readFile(join(dirOf(pkg), 'package.json'), 'utf8'))
      for (const [name, range] of Object.entries<string>(manifest.dependencies ?? {}))
        versions.set(name, range)
    }
    const rootManifest = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8'))
    const specs = new Set([`@types/node@${rootManifest.devDependencies['@types/node']}`])
    // Every tarball in the one install: source's and destination's dependency on
    // @pds-transfer/core@0.1.0 is met by core's tarball, not looked up on the registry.
    for (const pkg of new Set<Pkg>([...PACKAGES, ...SERVERS, 'conformance'])) specs.add(tarballs.get(pkg)!)
    for (const readme of [...readmes.values(), ...servers.values()]) {
      for (const name of readme.install) {
        if (PACKED.some((p) => name === `@pds-transfer/${p}`)) continue
        specs.add(versions.has(name) ? `${name}@${versions.get(name)}` : name)
      }
    }
    await writeFile(
      join(project, 'package.json'),
      JSON.stringify({
        name: 'embed-pds-transfer',
        private: true,
        type: 'module',
        // npm 11 runs dependencies' install scripts only when approved.
        allowScripts: { 'better-sqlite3': true, 'core-js': false },
      }),
    )
    t = Date.now()
    await run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...specs], {
      cwd: project,
      env: freshEnv(),
      timeout: 10 * MINUTE,
      maxBuffer: 16 * 1024 * 1024,
    })
    timings.npmInstallMs = Date.now() - t
    // The test DIDs of the server examples live here (infrastructure, not what is checked).
    plcDir = await startPlcDirectory()
  }, 15 * MINUTE)

  afterAll(async () => {
    for (const child of children) if (child.exitCode === null) process.kill(-child.pid!, 'SIGTERM')
    await plcDir?.close()
    if (work) await rm(work, { recursive: true, force: true })
  })

  /**
   * Starts `command` in the fresh project, in a process group of its own (npx runs the bin in a
   * child), and resolves with the first line it prints; stopped in afterAll.
   */
  async function startPrinting(command: string, args: string[], match = /./): Promise<string> {
    const child = spawn(command, args, { cwd: project, env: freshEnv(), detached: true })
    children.push(child)
    let stderr = ''
    child.stderr.on('data', (d) => {
      stderr += d
    })
    const lines = createInterface({ input: child.stdout })
    const first = new Promise<string>((resolve) =>
      lines.on('line', (line) => {
        if (match.test(line)) resolve(line)
      }),
    )
    const exited = once(child, 'exit').then(([code]) => {
      throw new Error(`${command} ${args.join(' ')} exited (${code}) before printing: ${stderr}`)
    })
    return Promise.race([first, exited])
  }

  /** `npx @pds-transfer/conformance …` in the fresh project, its exit code and output. */
  async function conformance(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return run('npx', ['--no-install', '@pds-transfer/conformance', ...args], {
      cwd: project,
      env: freshEnv(),
      timeout: 5 * MINUTE,
      maxBuffer: 16 * 1024 * 1024,
    }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (err: { code?: number; stdout?: string; stderr?: string }) => ({
        code: typeof err.code === 'number' ? err.code : -1,
        stdout: err.stdout ?? '',
        stderr: err.stderr ?? String(err),
      }),
    )
  }

  /** Runs a README server example with `args`, resolving with the CLI arguments it prints. */
  async function startServerExample(pkg: ServerPkg, args: string[], match?: RegExp): Promise<string[]> {
    const file = join(project, `${pkg}-server.mjs`)
    await writeFile(file, `${servers.get(pkg)!.code}\n`)
    return (await startPrinting(process.execPath, [file, ...args], match)).split(' ')
  }

  it('each tarball holds dist/ (JavaScript, declarations, source maps), no sources, versioned dependencies', async () => {
    const sizes: Record<string, number> = {}
    for (const pkg of PACKED) {
      const tarball = tarballs.get(pkg)!
      sizes[pkg] = (await stat(tarball)).size
      const files = (await run('tar', ['-tzf', tarball])).stdout.split('\n').filter(Boolean)
      const manifest = JSON.parse((await run('tar', ['-xzOf', tarball, 'package/package.json'])).stdout)
      const entry = pkg === 'conformance' ? 'dist/suite/index' : 'dist/index'
      expect(manifest.exports['.']).toEqual({ types: `./${entry}.d.ts`, default: `./${entry}.js` })
      expect(files).toContain(`package/${entry}.js`)
      expect(files).toContain(`package/${entry}.d.ts`)
      expect(files).toContain(`package/${entry}.js.map`)
      expect(files).toContain('package/README.md')
      expect(files).toContain('package/CHANGELOG.md')
      expect(files).toContain('package/LICENSE')
      const bin = Object.values<string>(manifest.bin ?? {}).map((b) => `package/${b.replace(/^\.\//, '')}`)
      expect(
        files.filter(
          (f) =>
            !/^package\/(dist\/|package\.json$|README\.md$|CHANGELOG\.md$|LICENSE$)/.test(f) &&
            !bin.includes(f) &&
            !(pkg === 'conformance' && f.startsWith('package/vectors/')),
        ),
      ).toEqual([])
      expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([])
      if (pkg === 'core') expect(files).toContain('package/dist/lexicons/com/atproto/transfer/defs.json')
      if (pkg === 'conformance') {
        expect(files).toContain('package/dist/cli.js')
        expect(files).toContain('package/vectors/transfer-vectors.json')
        // The workspace's test harnesses stay out: the reference PDS, browsers, the demo.
        expect(files.filter((f) => /reference-pds|chromium|demo\/|bench\//.test(f))).toEqual([])
      }
      expect(manifest).toMatchObject({ type: 'module', license: 'MIT' })
      expect(manifest.engines.node).toMatch(/^>=22(\.\d+)?$/)
      expect(manifest.repository?.url).toBeTruthy()
      expect(JSON.stringify(manifest.dependencies)).not.toContain('workspace:')
    }
    // A tarball that grows far past this has picked up something it should not ship.
    for (const size of Object.values(sizes)) expect(size).toBeLessThan(1024 * 1024)
    await mkdir(ARTIFACTS, { recursive: true })
    await writeFile(
      join(ARTIFACTS, 'sizes.json'),
      `${JSON.stringify({ tarballBytes: sizes, ...timings }, null, 2)}\n`,
    )
    console.log('tarball sizes (bytes):', sizes, timings)
  })

  it.each(PACKAGES)('the %s README example runs with plain node in the fresh project', async (pkg) => {
    const readme = readmes.get(pkg)!
    const file = join(project, `${pkg}-example.mjs`)
    await writeFile(file, `${readme.code}\n`)
    const { stdout } = await run(process.execPath, [file], { cwd: project, env: freshEnv(), timeout: MINUTE })
    expect(readme.expected.length).toBeGreaterThan(0)
    expect(stdout.trimEnd().split('\n')).toEqual(readme.expected)
  })

  it('the pds-backup and pds-identity commands run from the installed packages (npx)', async () => {
    const { stdout } = await run('npx', ['--no-install', 'pds-backup', '--help'], {
      cwd: project,
      env: freshEnv(),
      timeout: MINUTE,
    })
    expect(stdout).toMatch(/^usage: pds-backup <command>/)
    const identity = await run('npx', ['--no-install', 'pds-identity', '--help'], {
      cwd: project,
      env: freshEnv(),
      timeout: MINUTE,
    })
    expect(identity.stdout).toMatch(/^usage: pds-identity <command>/)
  })

  it('the README examples type-check against the packed declarations (checkJs, strict)', async () => {
    const files = [
      ...PACKAGES.map((pkg) => `${pkg}-example.mjs`),
      ...SERVERS.map((pkg) => `${pkg}-server.mjs`),
    ]
    for (const [i, pkg] of PACKAGES.entries())
      await writeFile(join(project, files[i]!), readmes.get(pkg)!.code)
    for (const pkg of SERVERS) await writeFile(join(project, `${pkg}-server.mjs`), servers.get(pkg)!.code)
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
    // Our declarations are what is checked: each example's JSDoc types its AccountSource,
    // AccountSink or SourceClient from the installed package. Other libraries' .d.ts are theirs.
    const args = ['--noEmit', '--allowJs', '--checkJs', '--strict', '--noImplicitAny', 'false']
    args.push('--module', 'nodenext', '--target', 'es2023', '--skipLibCheck', '--types', 'node', ...files)
    const result = await run(process.execPath, [tsc, ...args], {
      cwd: project,
      env: freshEnv(),
      timeout: MINUTE,
    }).then(
      () => '',
      (err: { stdout?: string }) => err.stdout ?? String(err),
    )
    expect(result).toBe('')
  })

  it("conformance's dependencies are exactly what its built code imports (no harness-only ones)", async () => {
    const installed = join(project, 'node_modules', '@pds-transfer', 'conformance')
    const manifest = JSON.parse(await readFile(join(installed, 'package.json'), 'utf8'))
    const imported = new Set<string>()
    for (const file of await readdir(join(installed, 'dist'), { recursive: true })) {
      if (!file.endsWith('.js')) continue
      const code = await readFile(join(installed, 'dist', file), 'utf8')
      // Static imports and re-exports (statements at the start of a line), and import('…').
      const statics = code.matchAll(/^\s*(?:import|export)\b[^'"]*?(?:\bfrom\s*|import\s*)'([^']+)'/gm)
      for (const [, spec] of [...statics, ...code.matchAll(/\bimport\(\s*'([^']+)'\s*\)/g)]) {
        if (spec!.startsWith('.') || spec!.startsWith('node:')) continue
        imported.add(/^(@[^/]+\/[^/]+|[^/]+)/.exec(spec!)![1]!)
      }
    }
    expect([...imported].sort()).toEqual(Object.keys(manifest.dependencies).sort())
    expect(imported).not.toContain('@atproto/pds')
  })

  it('npx @pds-transfer/conformance: --help, and the vectors pass from the installed package', async () => {
    const help = await conformance(['--help'])
    expect(help.stdout).toMatch(/^usage: pds-transfer-conformance <mode>/)
    const vectors = await conformance(['vectors', '--json', '-'])
    expect(vectors.code, vectors.stderr).toBe(0)
    const report = JSON.parse(vectors.stdout) as ConformanceReport
    expect(report.summary).toMatchObject({ fail: 0 })
    expect(report.summary.pass).toBeGreaterThan(10)
  })

  it(
    'npx @pds-transfer/conformance --source passes against the source README server example',
    async () => {
      // The destination's key, published at its OAuth client's origin (decision D7), by the CLI.
      const keyFile = join(project, 'recipient.jwk')
      expect((await conformance(['gen-key', '--out', keyFile])).code).toBe(0)
      const serving = await startPrinting('npx', [
        '--no-install',
        '@pds-transfer/conformance',
        'serve-key',
        keyFile,
      ])
      const keyOrigin = /client_id origin (http:\/\/\S+)/.exec(serving)?.[1]
      expect(keyOrigin, serving).toBeTruthy()

      const args = await startServerExample('source', [plcDir.url, keyOrigin!])
      expect(args.slice(0, 2)).toEqual(['--source', expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/)])
      const run = await conformance([...args, '--key', keyFile, '--json', '-'])
      expect(run.code, run.stderr).toBe(0)
      const report = JSON.parse(run.stdout) as ConformanceReport
      const ids = (status: string) => report.results.filter((r) => r.status === status).map((r) => r.id)
      expect(ids('fail')).toEqual([])
      // What a minimal embedding on loopback cannot show: https, a mailbox, a second destination,
      // and completion (it needs the emailed PLC code up front and moves the account).
      expect(ids('skip')).toEqual([
        'source.transport.https',
        'source.export.plc-token-email',
        'source.complete.plc-operation',
        'source.errors.account-deactivated',
        'source.errors.transfer-already-active',
      ])
      expect(ids('pass')).toEqual(expect.arrayContaining(['source.export.aead', 'source.export.repo-car']))
      expect(report.summary.pass).toBe(report.results.length - 5)

      // The current draft (0015) over the same plugin: its exportAccount answer and the sync API.
      const draft = await conformance([...args, '--dialect', 'draft', '--json', '-'])
      expect(draft.code, draft.stderr).toBe(0)
      const drafted = JSON.parse(draft.stdout) as ConformanceReport
      expect(drafted.results.filter((r) => r.status === 'fail').map((r) => r.id)).toEqual([])
      expect(drafted.results.filter((r) => r.status === 'skip').map((r) => r.id)).toEqual([
        'source.draft.transport.https',
        'source.draft.complete.refuses-dropping-user-key',
        'source.draft.complete.plc-operation',
      ])
    },
    5 * MINUTE,
  )

  it(
    'npx @pds-transfer/conformance --destination passes against the destination README server example',
    async () => {
      const port = await freePort()
      const args = await startServerExample('destination', [plcDir.url, String(port)])
      expect(args.slice(0, 2)).toEqual(['--destination', `http://127.0.0.1:${port}`])
      const run = await conformance([...args, '--json', '-'])
      expect(run.code, run.stderr).toBe(0)
      const report = JSON.parse(run.stdout) as ConformanceReport
      const ids = (status: string) => report.results.filter((r) => r.status === status).map((r) => r.id)
      expect(ids('fail')).toEqual([])
      expect(ids('skip')).toEqual(['destination.transport.https'])
      expect(ids('pass')).toEqual(
        expect.arrayContaining([
          'destination.accepts.honest',
          'destination.rejects.cut-mid-frame',
          'destination.complete.hostile-operation',
        ]),
      )
    },
    5 * MINUTE,
  )

  it(
    'the atproto-pds README example starts two reference PDSes with both roles (plain node)',
    async () => {
      const ports = [await freePort(), await freePort(), await freePort()]
      const line = await startServerExample('atproto-pds', ports.map(String), /^create an account at /)
      const [a, b] = [`http://localhost:${ports[1]}`, `http://localhost:${ports[2]}`]
      expect(line.join(' ')).toBe(`create an account at ${a}, then open ${b}/migrate`)
      for (const pds of [a, b]) {
        const res = await fetch(`${pds}/.well-known/atproto-transfer`)
        expect(res.status).toBe(200)
        expect(await res.json()).toMatchObject({ version: 1, did: expect.stringMatching(/^did:/) })
      }
      const migrate = await fetch(`${b}/migrate`)
      expect(migrate.status).toBe(200)
      expect(migrate.headers.get('content-type')).toMatch(/^text\/html/)
      // The reference PDS itself answers behind our routes.
      const health = await fetch(`${a}/xrpc/_health`)
      expect(health.status).toBe(200)
    },
    3 * MINUTE,
  )
})

/** A port free right now on loopback (the destination example states its URL before it listens). */
async function freePort(): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}
