/** The parts of s3rver (a local S3-compatible server, tests only) these tests use. */
declare module 's3rver' {
  export default class S3rver {
    constructor(options: {
      port: number
      address: string
      silent: boolean
      directory: string
      configureBuckets?: { name: string }[]
    })
    run(): Promise<{ port: number; address: string }>
    close(callback?: (err?: Error) => void): void
  }
}
