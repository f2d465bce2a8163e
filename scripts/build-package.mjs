#!/usr/bin/env node
// Builds the package in the current directory for publishing: dist/ (ESM JavaScript, .d.ts and
// source maps, from its tsconfig.build.json), plus any assets named by `--copy <from>:<to>`.
// Each public package's `build` and `prepack` run it; the workspace itself runs from src/.
import { execFileSync, execSync } from 'node:child_process'
import { cpSync, existsSync, readFileSync, realpathSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: {
    copy: { type: 'string', multiple: true, default: [] },
    pack: { type: 'boolean', default: false },
  },
})

// In the workspace `exports` point at src/; only pnpm swaps in `publishConfig.exports` (dist/)
// when it packs, so a tarball made by npm would ship exports that point at nothing.
if (values.pack && !process.env.npm_config_user_agent?.startsWith('pnpm/')) {
  console.error('pack and publish with pnpm (pnpm pack, pnpm publish): it applies publishConfig.exports')
  process.exit(1)
}

// tsconfig.build.json reads sibling packages' declarations from their dist/ (`paths`): build the
// ones not built yet (a release builds them all first, in dependency order).
const manifest = JSON.parse(readFileSync('package.json', 'utf8'))
for (const [name, range] of Object.entries(manifest.dependencies ?? {})) {
  if (!String(range).startsWith('workspace:') || !name.startsWith('@pds-transfer/')) continue
  // pnpm links each workspace dependency into node_modules: its real path is the package.
  const dir = realpathSync(`node_modules/${name}`)
  if (existsSync(`${dir}/dist/index.d.ts`)) continue
  const build = JSON.parse(readFileSync(`${dir}/package.json`, 'utf8')).scripts?.build
  if (!build) throw new Error(`${name} has no build script`)
  execSync(build, { cwd: dir, stdio: 'inherit' })
}

rmSync('dist', { recursive: true, force: true })
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
execFileSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { stdio: 'inherit' })
for (const spec of values.copy) {
  const [from, to] = spec.split(':')
  if (!from || !to) throw new Error(`--copy ${spec}: expected <from>:<to>`)
  cpSync(from, to, { recursive: true })
}
