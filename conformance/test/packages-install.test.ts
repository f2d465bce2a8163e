import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const run = promisify(execFile)
const ROOT = join(import.meta.dirname, '..', '..')
/** Dependency order: a package's build reads the declarations its dependencies built into dist/. */
const PACKED = ['core', 'source', 'destination', 'atproto-pds', 'archive', 'backup', 'identity'] as const
/** Installed into the fresh project, their README examples run (atproto-pds: packed only, so far). */
const PACKAGES = ['core', 'source', 'destination', 'archive', 'backup', 'identity'] as const
type Pkg = (typeof PACKED)[number]
/** Marks the README block that is run; the block must follow it. */
const MARKER = '<!-- example: run as is by conformance/test/packages-install.test.ts -->'
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

function parseReadme(text: string, pkg: string): Readme {
  const installLine = text.split('\n').find((l) => l.startsWith('npm install '))
  if (!installLine) throw new Error(`packages/${pkg}/README.md has no npm install line`)
  const at = text.indexOf(MARKER)
  if (at < 0) throw new Error(`packages/${pkg}/README.md has no ${MARKER}`)
  const block = /^\s*```js\n([\s\S]*?)\n```/.exec(text.slice(at + MARKER.length))
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
  const tarballs = new Map<Pkg, string>()
  const readmes = new Map<Pkg, Readme>()
  const timings: Record<string, number> = {}

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'pds-transfer-packages-'))
    const packs = join(work, 'tarballs')
    project = join(work, 'embed')
    await mkdir(project)

    let t = Date.now()
    for (const pkg of PACKED) {
      const before = new Set(await readdir(packs).catch(() => []))
      await run('pnpm', ['pack', '--pack-destination', packs], {
        cwd: join(ROOT, 'packages', pkg),
        timeout: 5 * MINUTE,
      })
      const made = (await readdir(packs)).filter((f) => !before.has(f) && f.endsWith('.tgz'))
      expect(made, `pnpm pack of ${pkg}`).toHaveLength(1)
      tarballs.set(pkg, join(packs, made[0]!))
    }
    for (const pkg of PACKAGES) {
      readmes.set(pkg, parseReadme(await readFile(join(ROOT, 'packages', pkg, 'README.md'), 'utf8'), pkg))
    }
    timings.packMs = Date.now() - t

    // The README install lines, with our packages as tarballs and the rest at the versions we
    // depend on (what the examples were tested with), plus @types/node for the type check.
    const versions = new Map<string, string>()
    for (const pkg of PACKAGES) {
      const manifest = JSON.parse(await readFile(join(ROOT, 'packages', pkg, 'package.json'), 'utf8'))
      for (const [name, range] of Object.entries<string>(manifest.dependencies ?? {}))
        versions.set(name, range)
    }
    const rootManifest = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8'))
    const specs = new Set([`@types/node@${rootManifest.devDependencies['@types/node']}`])
    // Every tarball in the one install: source's and destination's dependency on
    // @pds-transfer/core@0.1.0 is met by core's tarball, not looked up on the registry.
    for (const pkg of PACKAGES) specs.add(tarballs.get(pkg)!)
    for (const readme of readmes.values()) {
      for (const name of readme.install) {
        if (PACKAGES.some((p) => name === `@pds-transfer/${p}`)) continue
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
  }, 15 * MINUTE)

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true })
  })

  it('each tarball holds dist/ (JavaScript, declarations, source maps), no sources, versioned dependencies', async () => {
    const sizes: Record<string, number> = {}
    for (const pkg of PACKED) {
      const tarball = tarballs.get(pkg)!
      sizes[pkg] = (await stat(tarball)).size
      const files = (await run('tar', ['-tzf', tarball])).stdout.split('\n').filter(Boolean)
      expect(files).toContain('package/dist/index.js')
      expect(files).toContain('package/dist/index.d.ts')
      expect(files).toContain('package/dist/index.js.map')
      expect(files).toContain('package/README.md')
      expect(files).toContain('package/CHANGELOG.md')
      expect(files).toContain('package/LICENSE')
      expect(
        files.filter(
          (f) =>
            !/^package\/(dist\/|package\.json$|README\.md$|CHANGELOG\.md$|LICENSE$)/.test(f) &&
            !(pkg === 'backup' && f === 'package/bin/pds-backup.mjs') &&
            !(pkg === 'identity' && f === 'package/bin/pds-identity.mjs'),
        ),
      ).toEqual([])
      expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([])
      if (pkg === 'core') expect(files).toContain('package/dist/lexicons/com/atproto/transfer/defs.json')

      const manifest = JSON.parse((await run('tar', ['-xzOf', tarball, 'package/package.json'])).stdout)
      expect(manifest.exports['.']).toEqual({ types: './dist/index.d.ts', default: './dist/index.js' })
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
    const files = PACKAGES.map((pkg) => `${pkg}-example.mjs`)
    for (const [i, pkg] of PACKAGES.entries())
      await writeFile(join(project, files[i]!), readmes.get(pkg)!.code)
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
})
