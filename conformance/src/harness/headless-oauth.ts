import { request } from 'undici'

const API = '/@atproto/oauth-provider/~api'

/**
 * Signs in and consents on a reference PDS's OAuth authorization page the way its browser app
 * does (cookies, CSRF header, same-origin fetch metadata, referer of the authorize page), then
 * returns the client redirect URL carrying the code, or the error redirect when `consent` is
 * false. For tests and the demo; the browser test does the same through Chromium.
 */
export async function headlessAuthorize(
  authorizeUrl: URL,
  account: { username: string; password: string },
  options: { consent?: boolean } = {},
): Promise<URL> {
  const cookies = new Map<string, string>()
  const keep = (setCookie: string | string[] | undefined) => {
    for (const line of [setCookie ?? []].flat()) {
      const [pair = ''] = line.split(';')
      const eq = pair.indexOf('=')
      if (eq > 0) cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim())
    }
  }
  const cookieHeader = () => [...cookies].map(([k, v]) => `${k}=${v}`).join('; ')

  const page = await request(authorizeUrl, {
    headers: {
      accept: 'text/html',
      'sec-fetch-mode': 'navigate',
      'sec-fetch-site': 'cross-site',
      'sec-fetch-dest': 'document',
    },
  })
  keep(page.headers['set-cookie'])
  const html = await page.body.text()
  if (page.statusCode !== 200) {
    const reason = /error_description\\":\\"([^\\]*)/.exec(html)?.[1] ?? html.slice(0, 300)
    throw new Error(`authorize page: HTTP ${page.statusCode}: ${reason}`)
  }

  const call = async (endpoint: string, body: unknown, bearer?: string): Promise<Record<string, unknown>> => {
    const res = await request(new URL(`${API}${endpoint}`, authorizeUrl.origin), {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        origin: authorizeUrl.origin,
        referer: authorizeUrl.href,
        'sec-fetch-mode': 'same-origin',
        'sec-fetch-site': 'same-origin',
        'sec-fetch-dest': 'empty',
        cookie: cookieHeader(),
        'x-csrf-token': cookies.get('csrf-token') ?? '',
        ...(bearer && { authorization: `Bearer ${bearer}` }),
      },
      body: JSON.stringify(body),
    })
    keep(res.headers['set-cookie'])
    const json = (await res.body.json()) as Record<string, unknown>
    if (res.statusCode >= 400) throw new Error(`${endpoint}: HTTP ${res.statusCode}: ${JSON.stringify(json)}`)
    return json
  }

  const signedIn = await call('/sign-in', { locale: 'en', ...account, remember: false })
  const did = (signedIn.account as { did: string }).did
  const ephemeral = signedIn.ephemeralToken as string
  const answer =
    options.consent === false ? await call('/reject', {}) : await call('/consent', { did }, ephemeral)
  if (typeof answer.url !== 'string')
    throw new Error(`no redirect from the authorization server: ${JSON.stringify(answer)}`)
  // The provider's own redirect page sends the browser on to the client.
  const hop = await request(answer.url, {
    headers: {
      accept: 'text/html',
      cookie: cookieHeader(),
      referer: authorizeUrl.href,
      'sec-fetch-mode': 'navigate',
      'sec-fetch-site': 'same-origin',
      'sec-fetch-dest': 'document',
    },
  })
  const body = await hop.body.text()
  const location = hop.headers.location
  if (hop.statusCode >= 300 && hop.statusCode < 400 && typeof location === 'string') return new URL(location)
  throw new Error(`redirect page: HTTP ${hop.statusCode}: ${body.slice(0, 2000)}`)
}
