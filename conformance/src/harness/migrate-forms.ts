/**
 * Driving /migrate over HTTP as a browser without scripts would: form posts carry the page's
 * own Origin (the plugin refuses cross-site posts) and redirects are not followed, so a test
 * sees each step's answer.
 */

/** POSTs a form of the page at `url`'s origin. */
export function postForm(url: string, fields: Record<string, string> = {}): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: new URL(url).origin },
    body: new URLSearchParams(fields),
  })
}

/**
 * Signs in for `did` at a destination whose authorizer answers at once (TestSourceAuthorizer)
 * and follows the callback; returns the path of the transfer page it leads to.
 */
export async function signInAtMigrate(destUrl: string, did: string): Promise<string> {
  const authorize = await postForm(`${destUrl}/migrate/authorize`, { did })
  const callback = new URL(authorize.headers.get('location') as string)
  const started = await fetch(`${destUrl}${callback.pathname}${callback.search}`, { redirect: 'manual' })
  if (started.status !== 303)
    throw new Error(`the callback answered ${started.status}: ${await started.text()}`)
  return new URL(started.headers.get('location') as string).pathname
}
