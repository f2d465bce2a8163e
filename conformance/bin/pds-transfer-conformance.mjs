#!/usr/bin/env node
// The CLI is TypeScript run through tsx (a dev dependency of the workspace root).
import { register } from 'tsx/esm/api'

register()
await import('../src/cli.ts')
