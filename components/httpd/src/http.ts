/**
 * HTTP/1.1 request parsing for httpd: pure, so unit tests run it in Node.
 * Only what a static file server needs: the request line, the headers
 * that decide keep-alive and bodies, and limits that make bad input an
 * error response, not a crash.
 */

export const MAX_HEADER_BYTES = 8192;

export interface Request {
  method: string;
  path: string;
  /** 10 for HTTP/1.0, 11 for HTTP/1.1. */
  version: number;
  keepAlive: boolean;
  /** Bytes the request took in the buffer, headers and body. */
  length: number;
}

export type ParseResult =
  | { kind: 'incomplete' }
  | { kind: 'request'; req: Request }
  | { kind: 'error'; status: number; reason: string };

const CR = 13;
const LF = 10;

function find(buf: Uint8Array, from: number, end: number): number {
  for (let i = from; i + 3 < end; i++) {
    if (buf[i] === CR && buf[i + 1] === LF && buf[i + 2] === CR && buf[i + 3] === LF) return i;
  }
  return -1;
}

function ascii(buf: Uint8Array, start: number, end: number): string {
  let s = '';
  for (let i = start; i < end; i++) s += String.fromCharCode(buf[i]);
  return s;
}

/** Parse one request from buf[start, end). */
export function parseRequest(buf: Uint8Array, start: number, end: number): ParseResult {
  // Tolerate empty lines before a request (RFC 9112 2.2).
  while (start + 1 < end && buf[start] === CR && buf[start + 1] === LF) start += 2;
  const head = find(buf, start, Math.min(end, start + MAX_HEADER_BYTES));
  if (head < 0) {
    if (end - start >= MAX_HEADER_BYTES) return { kind: 'error', status: 431, reason: 'Request Header Fields Too Large' };
    return { kind: 'incomplete' };
  }
  const text = ascii(buf, start, head);
  const lines = text.split('\r\n');
  const m = /^([A-Z]+) (\S+) HTTP\/1\.([01])$/.exec(lines[0]);
  if (!m) return { kind: 'error', status: 400, reason: 'Bad Request' };
  const version = m[3] === '1' ? 11 : 10;
  let keepAlive = version === 11;
  let contentLength = 0;
  let chunked = false;
  for (let i = 1; i < lines.length; i++) {
    const c = lines[i].indexOf(':');
    if (c <= 0) return { kind: 'error', status: 400, reason: 'Bad Request' };
    const name = lines[i].slice(0, c).trim().toLowerCase();
    const value = lines[i].slice(c + 1).trim();
    if (name === 'connection') {
      const v = value.toLowerCase();
      if (v.includes('close')) keepAlive = false;
      else if (v.includes('keep-alive')) keepAlive = true;
    } else if (name === 'content-length') {
      if (!/^\d{1,9}$/.test(value)) return { kind: 'error', status: 400, reason: 'Bad Request' };
      contentLength = Number(value);
    } else if (name === 'transfer-encoding') {
      chunked = true;
    }
  }
  if (chunked) return { kind: 'error', status: 501, reason: 'Not Implemented' };
  const total = head + 4 - start + contentLength;
  if (contentLength > 1 << 20) return { kind: 'error', status: 413, reason: 'Content Too Large' };
  if (end - start < total) return { kind: 'incomplete' };
  return { kind: 'request', req: { method: m[1], path: m[2], version, keepAlive, length: total } };
}
