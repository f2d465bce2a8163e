/**
 * A rotation key made in the user's browser, shared by /migrate's code form and /keys' "Add a key
 * of your own" (each has an input `#rotationKey` for the public key): WebCrypto generates a P-256
 * key pair, the page offers the private key as a file to keep (it never leaves the page: no
 * request carries it), asks the user to confirm they saved it, and only then fills in the
 * public `did:key`. Keys are encoded as atproto's did:key (multicodec p256-pub 0x1200,
 * compressed point, base58btc) and the private key as hex and as multibase (p256-priv
 * 0x1306), the forms `goat` and @atproto/crypto read.
 */
/** `did` is a DID (its syntax has no characters that could end the script). */
export function keygenSection(did: string): string {
  return `<div id="keygen" hidden>
<p>No key pair yet? Make one here. Your browser makes it; the private key is only in the file you save.</p>
<button type="button" id="keygen-make">Make a key pair</button>
<div id="keygen-saved" hidden>
<p class="warn" role="note">Save the file now and keep it somewhere safe and private (a password manager, a USB stick).
Anyone holding it can change your identity; without it you cannot use the key.</p>
<p><a id="keygen-file" download="atproto-rotation-key.json" href="#">Save the key file</a></p>
<label><input type="checkbox" id="keygen-confirm"> I have saved the key file</label>
</div>
</div>
<script>
(() => {
  const box = document.getElementById('keygen');
  if (!window.crypto || !crypto.subtle) return;
  box.hidden = false;
  const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
  const base58 = (bytes) => {
    let n = 0n;
    for (const b of bytes) n = n * 256n + BigInt(b);
    let out = '';
    while (n > 0n) { out = B58[Number(n % 58n)] + out; n /= 58n; }
    for (const b of bytes) { if (b !== 0) break; out = '1' + out; }
    return out;
  };
  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  const fromB64u = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
  let publicDid;
  document.getElementById('keygen-make').addEventListener('click', async () => {
    const pair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
    const raw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
    const compressed = new Uint8Array(33);
    compressed[0] = 2 + (raw[64] & 1);
    compressed.set(raw.slice(1, 33), 1);
    publicDid = 'did:key:z' + base58(new Uint8Array([0x80, 0x24, ...compressed]));
    const d = fromB64u((await crypto.subtle.exportKey('jwk', pair.privateKey)).d);
    const file = {
      account: ${JSON.stringify(did)},
      use: 'PLC rotation key (P-256). Keep private. It can undo changes to this identity for 72 hours.',
      publicKey: publicDid,
      privateKeyHex: hex(d),
      privateKeyMultibase: 'z' + base58(new Uint8Array([0x86, 0x26, ...d])),
      createdAt: new Date().toISOString(),
    };
    const link = document.getElementById('keygen-file');
    link.href = URL.createObjectURL(new Blob([JSON.stringify(file, null, 2) + '\\n'], { type: 'application/json' }));
    document.getElementById('keygen-saved').hidden = false;
  });
  document.getElementById('keygen-confirm').addEventListener('change', (e) => {
    if (e.target.checked && publicDid) document.getElementById('rotationKey').value = publicDid;
  });
})();
</script>`
}
