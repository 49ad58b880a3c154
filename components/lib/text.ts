/**
 * Text to bytes and back without TextEncoder (QuickJS has none): Latin-1,
 * which is what HTTP, RESP and memcached's text protocol put on the wire.
 * Characters above U+00FF become '?'.
 */
export function latin1(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    b[i] = c < 256 ? c : 63;
  }
  return b;
}

export function fromLatin1(b: Uint8Array, start = 0, end = b.length): string {
  let s = '';
  for (let i = start; i < end; i += 4096) s += String.fromCharCode.apply(null, Array.from(b.subarray(i, Math.min(end, i + 4096))));
  return s;
}
