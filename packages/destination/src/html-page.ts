/** The plain HTML of our pages (/migrate, the backup status): no external resources, readable without scripts. */

/** Escapes text for HTML element content and quoted attribute values. */
export function esc(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

/** A complete page: no external resources, readable without scripts. */
export function page(title: string, body: string, options: { refreshSeconds?: number } = {}): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
${options.refreshSeconds ? `<noscript><meta http-equiv="refresh" content="${options.refreshSeconds}"></noscript>` : ''}
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; color: #1b1b1b; }
h1 { font-size: 1.5rem; }
label { display: block; font-weight: 600; margin-top: 1rem; }
input[type=text], input[type=password], input[type=email], textarea { width: 100%; padding: .5rem; font: inherit; box-sizing: border-box; }
fieldset { margin-top: 1rem; border: 1px solid #bbb; } label.choice { font-weight: 400; margin-top: .25rem; }
button { margin-top: 1rem; padding: .5rem 1rem; font: inherit; cursor: pointer; }
.warn { background: #fff4e5; border-left: 4px solid #b35c00; padding: .5rem 1rem; }
.error { background: #fdecea; border-left: 4px solid #b00020; padding: .5rem 1rem; }
.ok { background: #e8f5e9; border-left: 4px solid #1b5e20; padding: .5rem 1rem; }
.warn, .error, .ok { overflow-wrap: anywhere; }
progress { width: 100%; height: 1.25rem; }
dt { font-weight: 600; } dd { margin: 0 0 .5rem 0; }
code { word-break: break-all; }
pre { white-space: pre-wrap; word-break: break-all; }
table { border-collapse: collapse; } th, td { text-align: left; vertical-align: top; padding: .25rem .75rem .25rem 0; } td code { word-break: normal; }
</style>
</head>
<body>
<main>
<h1>${esc(title)}</h1>
${body}
</main>
</body>
</html>`
}

/** A size as people read it: "84 KiB", "3.2 MiB", "1.25 GiB". */
export function size(bytes: number): string {
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KiB`
  if (bytes < 1024 * 1024 * 1024) return `${(bytes / 1048576).toFixed(1)} MiB`
  return `${(bytes / 1073741824).toFixed(2)} GiB`
}
