/**
 * httpd: an HTTP/1.1 static file server on the POSIX shim, in the shape of
 * nginx's event loop: one epoll, non-blocking sockets, keep-alive and
 * pipelining (responses in request order), and file bodies sent with
 * sendfile from host buffers, so they never pass through JavaScript.
 *
 * It serves generated files of the sizes the LibrettOS paper used:
 * /4k, /8k, /16k, /32k, /64k, /128k (and / as a small index page).
 *
 * Timeouts, as nginx has them, so an idle or slow client cannot hold a
 * connection for ever: a request whose header has not arrived whole
 * within `header_timeout_s` of its first byte gets 408 and a close
 * (nginx's client_header_timeout); a keep-alive connection idle for
 * `keepalive_timeout_s` is closed (keepalive_timeout); a response the
 * client has not taken a byte of for `send_timeout_s` is dropped with the
 * connection (send_timeout).
 *
 * Arguments: port=PORT (default 80), header_timeout_s (60),
 * keepalive_timeout_s (75), send_timeout_s (60).
 */
import * as zerocopy from 'libretto:posix/zerocopy@0.1.0';
import { u64 } from '../../lib/abi.ts';
import { errno, EventLoop, host, io, isAgain, listenTcp, nowMs, socket } from '../../apps/lib/posix.ts';
import { parseRequest } from './http.ts';
import { latin1 } from '../../lib/text.ts';

interface File {
  /** An in-memory file descriptor (memfd), sent with sendfile. */
  fd: number;
  len: number;
  type: string;
}

interface Out {
  /** Header (or whole small response) bytes, sent with write. */
  head?: Uint8Array;
  /** A body in a host buffer, sent with sendfile. */
  file?: File;
  off: number;
}

interface Conn {
  fd: number;
  inbuf: Uint8Array;
  inlen: number;
  out: Out[];
  wantOut: boolean;
  closeAfter: boolean;
  /** When the connection last made progress (ms): a read, or output taken. */
  lastActive: number;
  /** When the first byte of the request now buffered arrived (ms); -1 if none is. */
  requestSince: number;
}

const stats = { accepted: 0, requests: 0, bytes: 0, errors: 0, closed: 0, timeouts: 0 };
const enc = { encode: latin1 };

function makeFile(size: number): File {
  const fd = zerocopy.memfdCreate(size);
  const chunk = new Uint8Array(Math.min(size, 16384));
  for (let off = 0; off < size; off += chunk.length) {
    const n = Math.min(chunk.length, size - off);
    for (let i = 0; i < n; i++) chunk[i] = 97 + ((off + i) % 26); // a..z
    zerocopy.pwrite(fd, off, n === chunk.length ? chunk : chunk.subarray(0, n));
  }
  return { fd, len: size, type: 'application/octet-stream' };
}

function buildFiles(): Map<string, File> {
  const files = new Map<string, File>();
  for (const k of [4, 8, 16, 32, 64, 128]) files.set(`/${k}k`, makeFile(k * 1024));
  const index = enc.encode('<!doctype html><title>libretto</title><h1>libretto httpd</h1><p>Served by an app image of WebAssembly components: httpd, the POSIX shim and a TCP/IP stack in TypeScript.</p>\n');
  const ifd = zerocopy.memfdCreate(index.length);
  zerocopy.pwrite(ifd, 0, index);
  files.set('/', { fd: ifd, len: index.length, type: 'text/html; charset=utf-8' });
  return files;
}

function header(status: number, reason: string, type: string, length: number, keepAlive: boolean): Uint8Array {
  return enc.encode(
    `HTTP/1.1 ${status} ${reason}\r\nServer: libretto-httpd\r\nContent-Type: ${type}\r\nContent-Length: ${length}\r\nConnection: ${keepAlive ? 'keep-alive' : 'close'}\r\n\r\n`,
  );
}

export const server = {
  run() {
    const args = new Map(host.args());
    const port = Number(args.get('port') ?? 80);
    const seconds = (name: string, dflt: number): number => {
      const v = Number(args.get(name) ?? dflt);
      if (!(v > 0)) {
        host.log(`httpd: ${name}=${args.get(name)} is not a number of seconds above 0; using ${dflt}`);
        return dflt * 1000;
      }
      return v * 1000;
    };
    const headerTimeout = seconds('header_timeout_s', 60);
    const keepaliveTimeout = seconds('keepalive_timeout_s', 75);
    const sendTimeout = seconds('send_timeout_s', 60);
    const files = buildFiles();
    const loop = new EventLoop();
    let lfd: number;
    try {
      lfd = listenTcp(port);
    } catch (e) {
      const msg = `httpd: cannot listen on port ${port}: ${errno(e) ?? String(e)}`;
      host.log(msg);
      return { tag: 'failed' as const, val: msg };
    }
    loop.listen(lfd);
    host.log(`httpd: listening on port ${port}; files ${[...files.keys()].join(' ')}`);
    const conns = new Map<number, Conn>();
    /** The clock, read once per batch of events. */
    let now = nowMs();
    let lastSweep = now;

    const close = (c: Conn) => {
      conns.delete(c.fd);
      loop.close(c.fd);
      stats.closed++;
    };

    const flush = (c: Conn): boolean => {
      while (c.out.length) {
        const o = c.out[0];
        try {
          if (o.head && o.off < o.head.length) {
            const wrote = io.write(c.fd, o.off === 0 ? o.head : o.head.subarray(o.off));
            if (wrote > 0) c.lastActive = now;
            o.off += wrote;
            if (o.off < o.head.length) break;
            if (o.file) o.off = o.head.length;
          }
          if (o.file) {
            const start = o.off - (o.head?.length ?? 0);
            if (start < o.file.len) {
              const n = zerocopy.sendfile(c.fd, o.file.fd, start, o.file.len - start);
              if (n > 0) c.lastActive = now;
              o.off += n;
              stats.bytes += n;
              if (start + n < o.file.len) break;
            }
          }
          c.out.shift();
        } catch (e) {
          if (isAgain(e)) break;
          close(c);
          return false;
        }
      }
      const want = c.out.length > 0;
      if (want !== c.wantOut) {
        c.wantOut = want;
        loop.want(c.fd, want);
      }
      if (!want && c.closeAfter) {
        try {
          socket.shutdown(c.fd, 'shut-wr');
        } catch {
          // the peer may be gone
        }
        close(c);
        return false;
      }
      return true;
    };

    const respond = (c: Conn, method: string, path: string, keepAlive: boolean) => {
      stats.requests++;
      if (method !== 'GET' && method !== 'HEAD') {
        const body = enc.encode('method not allowed\n');
        c.out.push({ head: concat(header(405, 'Method Not Allowed', 'text/plain', body.length, keepAlive), body), off: 0 });
        return;
      }
      const f = files.get(path.split('?')[0]);
      if (!f) {
        const body = enc.encode('not found\n');
        c.out.push({ head: concat(header(404, 'Not Found', 'text/plain', body.length, keepAlive), body), off: 0 });
        return;
      }
      c.out.push({ head: header(200, 'OK', f.type, f.len, keepAlive), file: method === 'GET' ? f : undefined, off: 0 });
    };

    const onReadable = (fd: number) => {
      const c = conns.get(fd);
      if (!c) return;
      for (;;) {
        let data: Uint8Array;
        try {
          data = io.read(fd, 65536);
        } catch (e) {
          if (isAgain(e)) break;
          close(c);
          return;
        }
        if (data.length === 0) {
          // The client closed its side: answer what it asked, then close.
          c.closeAfter = true;
          break;
        }
        if (c.inlen + data.length > c.inbuf.length) {
          const bigger = new Uint8Array(Math.max(c.inbuf.length * 2, c.inlen + data.length));
          bigger.set(c.inbuf.subarray(0, c.inlen));
          c.inbuf = bigger;
        }
        c.inbuf.set(data, c.inlen);
        if (c.inlen === 0) c.requestSince = now;
        c.inlen += data.length;
        c.lastActive = now;
        if (data.length < 65536) break;
      }
      // Every complete request in the buffer, in order (pipelining).
      let at = 0;
      while (!c.closeAfter || at < c.inlen) {
        const r = parseRequest(c.inbuf, at, c.inlen);
        if (r.kind === 'incomplete') break;
        if (r.kind === 'error') {
          stats.errors++;
          const body = enc.encode(`${r.reason.toLowerCase()}\n`);
          c.out.push({ head: concat(header(r.status, r.reason, 'text/plain', body.length, false), body), off: 0 });
          c.closeAfter = true;
          at = c.inlen;
          break;
        }
        respond(c, r.req.method, r.req.path, r.req.keepAlive);
        at += r.req.length;
        if (!r.req.keepAlive) {
          c.closeAfter = true;
          at = c.inlen;
          break;
        }
      }
      if (at > 0) {
        c.inbuf.copyWithin(0, at, c.inlen);
        c.inlen -= at;
        // What is left is the start of the next request, which arrived now.
        c.requestSince = c.inlen > 0 ? now : -1;
      }
      flush(c);
    };

    /** Close what has timed out; a request still arriving gets 408 first. */
    const sweep = () => {
      for (const c of [...conns.values()]) {
        if (c.out.length > 0) {
          if (now - c.lastActive >= sendTimeout) {
            stats.timeouts++;
            close(c);
          }
        } else if (c.inlen > 0 && c.requestSince >= 0) {
          if (now - c.requestSince >= headerTimeout && !c.closeAfter) {
            stats.timeouts++;
            const body = enc.encode('request timeout\n');
            c.out.push({ head: concat(header(408, 'Request Timeout', 'text/plain', body.length, false), body), off: 0 });
            c.closeAfter = true;
            c.inlen = 0;
            c.requestSince = -1;
            c.lastActive = now;
            flush(c);
          }
        } else if (now - c.lastActive >= keepaliveTimeout) {
          stats.timeouts++;
          close(c);
        }
      }
    };

    loop.run({
      beforeEvents() {
        now = nowMs();
      },
      afterEvents() {
        if (now - lastSweep >= 500) {
          lastSweep = now;
          sweep();
        }
      },
      onAccept(fd) {
        for (;;) {
          let cfd: number;
          try {
            [cfd] = socket.accept(fd);
          } catch (e) {
            if (!isAgain(e)) stats.errors++;
            return;
          }
          stats.accepted++;
          io.setNonblocking(cfd, true);
          socket.setsockopt(cfd, 'tcp-nodelay', 1);
          conns.set(cfd, { fd: cfd, inbuf: new Uint8Array(4096), inlen: 0, out: [], wantOut: false, closeAfter: false, lastActive: now, requestSince: -1 });
          loop.watch(cfd);
          onReadable(cfd);
        }
      },
      onReadable,
      onWritable(fd) {
        const c = conns.get(fd);
        if (c) flush(c);
      },
    });
    for (const c of [...conns.values()]) close(c);
    loop.close(lfd);
    return { tag: 'stopped' as const };
  },
};

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

export const control = {
  describe() {
    return { name: 'httpd', version: `0.1.0+${__LIBRETTO_BACKEND__}` };
  },
  stats() {
    return Object.entries(stats).map(([name, value]) => ({ name, value: u64(value) }));
  },
};
