/**
 * The browser half of /recover's signing: a script that reads the user's rotation key file in
 * the page (the file input has no `name`, so no form ever uploads it), imports its P-256 private
 * key into WebCrypto, checks that it belongs to the file's `publicKey`, and signs bytes as PLC
 * and @atproto/crypto verify them: ECDSA over SHA-256, r‖s (64 bytes), low-S, base64url. The
 * private key never leaves the page. secp256k1 keys have no WebCrypto support: the page sends
 * their holders to `pds-identity`, which signs the same bytes.
 *
 * The PKCS#8 wrapper is the fixed DER prefix of a P-256 PrivateKeyInfo holding only `d`
 * (WebCrypto derives the public point from it).
 */
export const SIGNER_SCRIPT = `const recoverySigner = (() => {
  const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
  const PKCS8 = '3041020100301306072a8648ce3d020106082a8648ce3d030107042730250201010420';
  const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
  const base58 = (bytes) => {
    let n = 0n;
    for (const b of bytes) n = n * 256n + BigInt(b);
    let out = '';
    while (n > 0n) { out = B58[Number(n % 58n)] + out; n /= 58n; }
    for (const b of bytes) { if (b !== 0) break; out = '1' + out; }
    return out;
  };
  const fromHex = (h) => Uint8Array.from(h.match(/../g), (x) => parseInt(x, 16));
  const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  const fromB64u = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
  const toB64u = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
  const publicDid = (jwk) => {
    const x = fromB64u(jwk.x), y = fromB64u(jwk.y);
    return 'did:key:z' + base58(new Uint8Array([0x80, 0x24, 2 + (y[31] & 1), ...x]));
  };
  class KeyFileError extends Error {}
  /** The key of a key file: { publicKey, sign(bytes) → base64url signature }. */
  const load = async (file) => {
    let parsed;
    try { parsed = JSON.parse(await file.text()); } catch { throw new KeyFileError('This is not a key file: it is not JSON. Choose the file you saved when you made your rotation key.'); }
    const pub = parsed && parsed.publicKey, hex = parsed && parsed.privateKeyHex;
    if (typeof pub !== 'string' || !pub.startsWith('did:key:z')) throw new KeyFileError('This file has no "publicKey" (did:key:z…): it is not a rotation key file.');
    if (typeof hex !== 'string' || !/^[0-9a-f]{64}$/.test(hex)) throw new KeyFileError('This file has no private key ("privateKeyHex", 64 hex digits): it holds a public key only.');
    if (!pub.startsWith('did:key:zDn')) {
      const err = new KeyFileError('This is a secp256k1 key, which browsers cannot sign with. Use the command line below (pds-identity) with this file; it signs the same thing.');
      err.publicKey = pub;
      throw err;
    }
    const key = await crypto.subtle.importKey('pkcs8', fromHex(PKCS8 + hex), { name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign']);
    if (publicDid(await crypto.subtle.exportKey('jwk', key)) !== pub) throw new KeyFileError('The private key in this file does not belong to its publicKey: the file was changed or mixed up. Find the original.');
    const sign = async (bytes) => {
      const sig = new Uint8Array(await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, bytes));
      let s = BigInt('0x' + toHex(sig.slice(32)));
      if (s > N / 2n) s = N - s;
      sig.set(fromHex(s.toString(16).padStart(64, '0')), 32);
      return toB64u(sig);
    };
    return { publicKey: pub, sign };
  };
  return { load, KeyFileError, fromB64: (s) => fromB64u(s.replace(/=+$/, '')) };
})();`
