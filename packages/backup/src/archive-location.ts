import { type ArchiveStore, FsArchiveStore, S3ArchiveStore } from '@pds-transfer/archive'

/**
 * The store an `--archive` names: a directory, or `s3://bucket[/prefix]` in an S3-compatible
 * bucket. For S3 the credentials and region come from the AWS SDK's usual sources
 * (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, profiles); `endpoint` (or
 * `PDS_BACKUP_S3_ENDPOINT`) points at a server other than AWS.
 */
export function openArchiveStore(
  location: string,
  options: { endpoint?: string; spoolDir?: string } = {},
): ArchiveStore {
  const s3 = /^s3:\/\/([^/]+)\/?(.*)$/.exec(location)
  if (!s3) return new FsArchiveStore(location)
  const [, bucket = '', path = ''] = s3
  const endpoint = options.endpoint ?? process.env.PDS_BACKUP_S3_ENDPOINT
  return new S3ArchiveStore({
    bucket,
    prefix: path && !path.endsWith('/') ? `${path}/` : path,
    ...(options.spoolDir && { spoolDir: options.spoolDir }),
    client: { region: process.env.AWS_REGION ?? 'us-east-1', ...(endpoint && { endpoint }) },
  })
}
