/** Where the pds-identity commands write: standard output and error, or a test's capture. */
export interface CliIo {
  out(text: string): void
  err(text: string): void
}
