/**
 * mc: a memcached server on the POSIX shim, for the libmemcached tools
 * (memaslap, memslap, memcapable) and any memcached client: the binary
 * protocol and the text protocol on one port, chosen per connection by
 * its first byte. The protocols and the store are pure modules
 * (session.ts, binary.ts, text.ts, store.ts); this file is memcached's
 * event loop: one epoll, non-blocking sockets, every complete request in
 * what arrived answered in order, the replies of a batch written at once.
 *
 * Arguments: port=PORT (default 11211), memory-mb=MB (default 64, as -m),
 * max-item=BYTES (default 1048576, as -I), max-connections=N (default
 * 1024, as -c).
 */
import { u64 } from '../../../lib/abi.ts';
import { errno, EventLoop, host, io, isAgain, listenTcp, socket } from '../../lib/posix.ts';
import { Server, Session } from './session.ts';
import { Sink } from './sink.ts';

/** Bytes asked of one read. */
const READ_BYTES = 65536;
/** Reads per connection per wake, so one client cannot starve the rest. */
const READS_PER_WAKE = 16;
/** Replies held for a client that does not read them before its requests stop being read. */
const OUT_HIGH_WATER = 4 << 20;
/** An input buffer above this is given back once it empties. */
const IN_KEEP = 64 * 1024;

interface Conn {
  fd: number;
  session: Session;
  /** Input not yet used (a request not all in). */
  inbuf: Uint8Array;
  inlen: number;
  out: Sink;
  closed: boolean;
}

/** The running server, for `ctl stats`. */
let running: Server | null = null;

export const server = {
  run() {
    const args = new Map(host.args());
    const port = Number(args.get('port') ?? 11211);
    const memoryMb = Number(args.get('memory-mb') ?? 64);
    const maxItem = Number(args.get('max-item') ?? 1 << 20);
    const maxConns = Number(args.get('max-connections') ?? 1024);
    if (!(memoryMb > 0) || !(maxItem >= 1024) || !(maxConns > 0)) {
      const msg = `mc: bad arguments: memory-mb=${memoryMb} max-item=${maxItem} max-connections=${maxConns}`;
      host.log(msg);
      return { tag: 'failed' as const, val: msg };
    }
    const srv = new Server({ limitBytes: memoryMb * (1 << 20), maxItem, now: Date.now() / 1000 });
    running = srv;
    const g = srv.gauges;
    const loop = new EventLoop();
    let lfd: number;
    try {
      lfd = listenTcp(port, 1024);
    } catch (e) {
      const msg = `mc: cannot listen on port ${port}: ${errno(e) ?? String(e)}`;
      host.log(msg);
      return { tag: 'failed' as const, val: msg };
    }
    loop.listen(lfd);
    host.log(`mc: memcached ${srv.version} listening on port ${port} (binary and text protocols), ${memoryMb} MB, items up to ${maxItem} bytes`);
    const conns = new Map<number, Conn>();

    const close = (c: Conn) => {
      if (c.closed) return;
      c.closed = true;
      conns.delete(c.fd);
      loop.close(c.fd);
      g.curr_connections--;
    };

    /** Send what is queued; false if the connection closed. */
    const flush = (c: Conn): boolean => {
      while (c.out.len > 0) {
        let n: number;
        try {
          n = io.write(c.fd, c.out.view());
        } catch (e) {
          if (isAgain(e)) break;
          close(c);
          return false;
        }
        if (n === 0) break;
        g.bytes_written += n;
        c.out.consume(n);
      }
      if (c.out.len === 0 && c.session.after === 'close-after-reply') {
        try {
          socket.shutdown(c.fd, 'shut-wr');
        } catch {
          // the client may be gone
        }
        close(c);
        return false;
      }
      return true;
    };

    const update = (c: Conn) => {
      if (c.closed) return;
      const reading = c.session.after === 'go-on' && c.out.len < OUT_HIGH_WATER;
      loop.interest(c.fd, reading, c.out.len > 0);
    };

    /** Run the requests in `data` (after what was held), keeping any partial one. */
    const take = (c: Conn, data: Uint8Array) => {
      g.bytes_read += data.length;
      if (c.inlen === 0) {
        // The usual case: whole requests, straight from the read.
        const used = c.session.feed(data, 0, data.length, c.out);
        const rest = data.length - used;
        if (rest > 0 && c.session.after === 'go-on') {
          if (rest > c.inbuf.length) c.inbuf = new Uint8Array(Math.max(rest, c.inbuf.length * 2));
          c.inbuf.set(data.subarray(used), 0);
          c.inlen = rest;
        }
        return;
      }
      if (c.inlen + data.length > c.inbuf.length) {
        const bigger = new Uint8Array(Math.max(c.inbuf.length * 2, c.inlen + data.length));
        bigger.set(c.inbuf.subarray(0, c.inlen));
        c.inbuf = bigger;
      }
      c.inbuf.set(data, c.inlen);
      c.inlen += data.length;
      const used = c.session.feed(c.inbuf, 0, c.inlen, c.out);
      if (used > 0) {
        c.inbuf.copyWithin(0, used, c.inlen);
        c.inlen -= used;
      }
      if (c.inlen === 0 && c.inbuf.length > IN_KEEP) c.inbuf = new Uint8Array(16384);
    };

    const onReadable = (fd: number) => {
      const c = conns.get(fd);
      if (!c) return;
      for (let i = 0; i < READS_PER_WAKE && c.session.after === 'go-on' && c.out.len < OUT_HIGH_WATER; i++) {
        let data: Uint8Array;
        try {
          data = io.read(fd, READ_BYTES);
        } catch (e) {
          if (isAgain(e)) break;
          close(c);
          return;
        }
        if (data.length === 0) {
          // The client closed its side: nothing more to answer.
          close(c);
          return;
        }
        take(c, data);
        if (data.length < READ_BYTES) break;
      }
      if (c.session.after === 'close-now') {
        // Replies to the requests before it still go (as memcached sends
        // each reply before it reads the next request), if they fit now.
        if (c.out.len > 0) {
          try {
            io.write(c.fd, c.out.view());
          } catch {
            // the client is gone or not reading: it loses them
          }
        }
        close(c);
        return;
      }
      if (flush(c)) update(c);
    };

    loop.run({
      onAccept(fd) {
        for (;;) {
          let cfd: number;
          try {
            [cfd] = socket.accept(fd);
          } catch (e) {
            if (!isAgain(e)) host.log(`mc: accept: ${errno(e) ?? String(e)}`);
            return;
          }
          if (conns.size >= maxConns) {
            io.close(cfd);
            continue;
          }
          io.setNonblocking(cfd, true);
          socket.setsockopt(cfd, 'tcp-nodelay', 1);
          const c: Conn = { fd: cfd, session: new Session(srv), inbuf: new Uint8Array(16384), inlen: 0, out: new Sink(16384), closed: false };
          conns.set(cfd, c);
          g.curr_connections++;
          g.total_connections++;
          loop.interest(cfd, true, false);
          onReadable(cfd);
        }
      },
      onReadable,
      onWritable(fd) {
        const c = conns.get(fd);
        if (!c) return;
        // Reading stopped at the high-water mark resumes in `update`.
        if (flush(c)) update(c);
      },
      afterEvents() {
        srv.store.setTime(Date.now() / 1000);
      },
    });
    for (const c of [...conns.values()]) close(c);
    loop.close(lfd);
    return { tag: 'stopped' as const };
  },
};

export const control = {
  describe() {
    return { name: 'mc', version: `0.1.0+${__LIBRETTO_BACKEND__}` };
  },
  stats() {
    return running ? counters(running) : [];
  },
};

/** The counters `ctl stats` shows, from the running server. */
function counters(srv: Server): { name: string; value: number | bigint }[] {
  const out: { name: string; value: number | bigint }[] = [];
  for (const [k, v] of Object.entries(srv.gauges)) out.push({ name: k, value: u64(v) });
  for (const [k, v] of Object.entries(srv.stats)) out.push({ name: k, value: u64(v) });
  for (const [k, v] of Object.entries(srv.store.counters)) out.push({ name: k, value: u64(v) });
  out.push({ name: 'curr_items', value: u64(srv.store.currItems) }, { name: 'bytes', value: u64(srv.store.currBytes) });
  return out;
}
