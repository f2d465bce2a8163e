export * from './content-types.ts'
export * from './errors.ts'
export * from './limits.ts'
