#!/usr/bin/env node
// In the workspace (src/ is there): the TypeScript source through tsx, since the workspace's
// packages export their sources and a dist/ left by a build would import them. Installed (the
// tarball ships dist/, not src/): the built CLI.
import { existsSync } from 'node:fs'

const source = new URL('../src/cli.ts', import.meta.url)
if (existsSync(source)) {
  const { register } = await import('tsx/esm/api')
  register()
  await import(source.href)
} else await import(new URL('../dist/cli.js', import.meta.url).href)
