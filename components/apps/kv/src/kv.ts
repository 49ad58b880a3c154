/**
 * kv: a Redis-protocol (RESP2) store on the POSIX shim, in the shape of
 * Redis's own event loop: one epoll, non-blocking sockets, every command
 * of a read answered in order and the replies of one read written in one
 * call (so pipelined batches go out as few segments, never one per
 * reply), a cron between events that expires keys.
 *
 * Errors are replies (-ERR, -WRONGTYPE), never a closed connection; a
 * protocol error (bad lengths, unbalanced quotes, a line over 64 KiB) is
 * answered with -ERR Protocol error and the connection is closed, as
 * Redis does. A client whose replies pile up past 64 MiB unsent stops
 * being read until they drain.
 *
 * Arguments: port=PORT (default 6379), maxmemory=BYTES (default 512 MiB:
 * writes are refused with -OOM above it), proto-max-bulk-len=BYTES
 * (default 512 MiB, Redis's), max-clients=N (default 1000), log-stats=SECS
 * (log counters every SECS seconds; default 0, never).
 */
import * as epoll from 'libretto:posix/epoll@0.1.0';
import { num, u64 } from '../../../lib/abi.ts';
import { errno, host, io, isAgain, listenTcp, socket } from '../../lib/posix.ts';
import { Kv, type Session } from './commands.ts';
import { DEFAULT_MAX_BULK, Parser, ProtocolError, Writer } from './resp.ts';

/** Bytes read per call. */
const READ_MAX = 65536;
/** Bytes read from one connection per wake, so one client cannot starve the rest. */
const READ_PER_WAKE = 1 << 20;
/** Unsent reply bytes past which a connection's commands wait (its input is not read). */
const OUT_PAUSE = 1 << 20;
/** Unsent reply bytes of all connections past which every connection with unsent replies waits. */
const OUT_SQUEEZE = 128 << 20;
/** Input one connection may hold (a command being received) before the memory left is checked. */
const INPUT_CHECK = 1 << 20;
/** The expiry cron's period. */
const CRON_MS = 100;

interface Conn {
  fd: number;
  parser: Parser;
  out: Writer;
  session: Session;
  /** Close once the output is sent (QUIT, a protocol error, the peer's EOF). */
  closing: boolean;
  /** The events registered: bit 1 in, bit 2 out. */
  events: number;
}

const EV = (i: boolean, o: boolean) => ({ in: i, out: o, err: false, hup: false, rdhup: i, et: false, oneshot: false });

function argNumber(args: Map<string, string>, key: string, dflt: number): number {
  const v = args.get(key);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`kv: ${key}=${v} is not a whole number`);
  return n;
}

const stats = { accepted: 0, closed: 0, protocolErrors: 0, internalErrors: 0, bytesIn: 0, bytesOut: 0, refused: 0, waits: 0, events: 0 };
let kv: Kv | null = null;

export const server = {
  run() {
    const args = new Map(host.args());
    let port: number;
    let maxClients: number;
    let logStats = 0;
    try {
      port = argNumber(args, 'port', 6379);
      maxClients = argNumber(args, 'max-clients', 1000);
      logStats = argNumber(args, 'log-stats', 0);
      kv = new Kv({ port, maxmemory: argNumber(args, 'maxmemory', 512 << 20), maxBulk: argNumber(args, 'proto-max-bulk-len', DEFAULT_MAX_BULK) });
    } catch (e) {
      host.log(String((e as Error).message));
      return { tag: 'failed' as const, val: String((e as Error).message) };
    }
    const db = kv;
    let lfd: number;
    try {
      lfd = listenTcp(port);
    } catch (e) {
      const msg = `kv: cannot listen on port ${port}: ${errno(e) ?? String(e)}`;
      host.log(msg);
      return { tag: 'failed' as const, val: msg };
    }
    const ep = epoll.create();
    epoll.ctl(ep, 'add', lfd, EV(true, false), u64(lfd));
    host.log(`kv: listening on port ${port} (RESP2; maxmemory ${db.config.maxmemory}, proto-max-bulk-len ${db.config.maxBulk})`);
    const conns = new Map<number, Conn>();
    let nextId = 1;
    /** OUT_PAUSE, or 1 while all connections' unsent replies are over OUT_SQUEEZE (set by the cron). */
    let outLimit = OUT_PAUSE;

    /**
     * Whether a big argument of `len` bytes may be buffered: the data, the
     * input held by every connection and it must fit under maxmemory, so
     * a flood of big values is refused instead of exhausting the image's
     * memory.
     */
    const admit = (len: number): boolean => {
      if (db.config.maxmemory === 0) return true;
      let held = 0;
      for (const c of conns.values()) held += c.parser.pending;
      return db.store.used + held + len <= db.config.maxmemory;
    };

    const close = (c: Conn) => {
      if (!conns.delete(c.fd)) return;
      stats.closed++;
      try {
        io.close(c.fd);
      } catch {
        // already gone
      }
    };

    const interest = (c: Conn) => {
      const wantIn = !c.closing && c.out.len < outLimit;
      const wantOut = c.out.len > 0;
      const now = (wantIn ? 1 : 0) | (wantOut ? 2 : 0);
      if (now === c.events) return;
      // A connection waiting for nothing (closing, all sent) is closed by the caller.
      epoll.ctl(ep, 'modify', c.fd, EV(wantIn, wantOut), u64(c.fd));
      c.events = now;
    };

    /** Send what is queued; close when done and closing. */
    const flush = (c: Conn) => {
      while (c.out.len > 0) {
        let n: number;
        try {
          n = io.write(c.fd, c.out.view());
        } catch (e) {
          if (isAgain(e)) break;
          close(c);
          return;
        }
        stats.bytesOut += n;
        c.out.consume(n);
        if (n === 0) break;
      }
      if (c.out.len === 0 && c.closing) {
        try {
          socket.shutdown(c.fd, 'shut-wr');
        } catch {
          // the peer may be gone
        }
        close(c);
        return;
      }
      interest(c);
    };

    /** Run every whole command received, in order. */
    const execute = (c: Conn) => {
      for (;;) {
        let cmd;
        try {
          cmd = c.parser.next();
        } catch (e) {
          if (!(e instanceof ProtocolError)) throw e;
          stats.protocolErrors++;
          c.out.error(`ERR Protocol error: ${e.message}`);
          c.closing = true;
          return;
        }
        if (cmd === null) return;
        try {
          db.exec(cmd, c.out, c.session);
        } catch (e) {
          // A bug in a command must cost one reply, not the image.
          stats.internalErrors++;
          host.log(`kv: internal error in ${String.fromCharCode(...cmd[0].subarray(0, 32))}: ${(e as Error)?.stack ?? String(e)}`);
          c.out.error(`ERR internal error: ${(e as Error)?.message ?? String(e)}`);
        }
        if (c.session.quit) {
          c.closing = true;
          return;
        }
        // Stop reading replies into memory past the limit; the rest waits in the parser.
        if (c.out.len >= outLimit) return;
      }
    };

    const onReadable = (c: Conn) => {
      let got = 0;
      while (!c.closing && got < READ_PER_WAKE && c.out.len < outLimit) {
        let data: Uint8Array;
        try {
          data = io.read(c.fd, READ_MAX);
        } catch (e) {
          if (isAgain(e)) break;
          close(c);
          return;
        }
        if (data.length === 0) {
          // The peer closed its side: answer what it sent, then close.
          execute(c);
          c.closing = true;
          break;
        }
        got += data.length;
        stats.bytesIn += data.length;
        c.parser.feed(data);
        execute(c);
        if (c.parser.pending > INPUT_CHECK && !c.closing && !admit(0)) {
          // A command being received (many arguments, or bytes not yet
          // parsed) that the memory left cannot hold: refuse it, as a
          // protocol error, before it exhausts the image's memory.
          stats.protocolErrors++;
          c.out.error('ERR Protocol error: request too big for the memory left (maxmemory)');
          c.closing = true;
        }
        if (data.length < READ_MAX) break;
      }
      flush(c);
      pump(c);
      if (conns.has(c.fd) && !c.closing && c.out.len < outLimit) c.parser.trim();
    };

    /**
     * Commands left in the parser while the output was over its limit:
     * run them once it has drained (no event may come for them: the
     * client sent them all and waits).
     */
    const pump = (c: Conn) => {
      while (conns.has(c.fd) && !c.closing && c.out.len < outLimit && c.parser.pending > 0) {
        const before = c.parser.pending;
        execute(c);
        flush(c);
        if (c.parser.pending === before) return;
      }
    };

    const serve = (c: Conn, ev: { in: boolean; out: boolean; hup: boolean; err: boolean; rdhup: boolean }) => {
      if (ev.out && c.out.len > 0) {
        flush(c);
        pump(c);
      }
      if (!conns.has(c.fd)) return;
      if (ev.in || ev.hup || ev.err || ev.rdhup) {
        if (c.closing) {
          // Only the hang-up of a connection we are done reading.
          if (ev.hup || ev.err) close(c);
        } else onReadable(c);
      }
    };

    const onAccept = () => {
      for (;;) {
        let cfd: number;
        try {
          [cfd] = socket.accept(lfd);
        } catch (e) {
          if (!isAgain(e)) stats.refused++;
          return;
        }
        if (conns.size >= maxClients) {
          // Redis answers and closes: the client sees why.
          try {
            io.write(cfd, new Uint8Array([...'-ERR max number of clients reached\r\n'].map((ch) => ch.charCodeAt(0))));
          } catch {
            // nothing to tell
          }
          try {
            io.close(cfd);
          } catch {
            // gone
          }
          stats.refused++;
          continue;
        }
        stats.accepted++;
        db.stats.connections++;
        io.setNonblocking(cfd, true);
        socket.setsockopt(cfd, 'tcp-nodelay', 1);
        const c: Conn = {
          fd: cfd,
          parser: new Parser(db.config.maxBulk, 4096, admit),
          out: new Writer(4096),
          session: { id: nextId++, quit: false, name: null },
          closing: false,
          events: 1,
        };
        conns.set(cfd, c);
        epoll.ctl(ep, 'add', cfd, EV(true, false), u64(cfd));
      }
    };

    let lastCron = Date.now();
    let lastLog = lastCron;
    for (let turn = 1; ; turn++) {
      const events = epoll.wait(ep, 256, CRON_MS);
      stats.waits++;
      stats.events += events.length;
      if ((events.length === 0 || (turn & 1023) === 0) && host.stopping()) break;
      for (const e of events) {
        const fd = num(e.data as bigint | number);
        if (fd === lfd) {
          onAccept();
          continue;
        }
        const c = conns.get(fd);
        if (!c) continue;
        try {
          serve(c, e.events);
        } catch (err) {
          // Whatever went wrong with one connection (a bug, or memory
          // exhausted by what it sent) costs that connection, not the image:
          // dropping it frees what it held.
          stats.internalErrors++;
          host.log(`kv: closing client ${c.session.id} after an internal error: ${(err as Error)?.message ?? String(err)}`);
          close(c);
        }
      }
      const now = Date.now();
      if (now - lastCron >= CRON_MS) {
        lastCron = now;
        db.store.expireSome(200);
        let unsent = 0;
        for (const c of conns.values()) unsent += c.out.len;
        outLimit = unsent > OUT_SQUEEZE ? 1 : OUT_PAUSE;
        if (logStats > 0 && now - lastLog >= logStats * 1000) {
          lastLog = now;
          host.log(`kv: ${conns.size} clients, ${db.store.size} keys, ${db.stats.commands} commands, ${stats.waits} waits, ${stats.events} events`);
        }
      }
    }
    for (const c of [...conns.values()]) close(c);
    try {
      io.close(lfd);
      io.close(ep);
    } catch {
      // gone
    }
    return { tag: 'stopped' as const };
  },
};

export const control = {
  describe() {
    return { name: 'kv', version: `0.1.0+${__LIBRETTO_BACKEND__}` };
  },
  stats() {
    const all: Record<string, number> = {
      ...stats,
      commands: kv?.stats.commands ?? 0,
      errors: kv?.stats.errors ?? 0,
      keys: kv?.store.size ?? 0,
      usedMemory: kv?.store.used ?? 0,
    };
    return Object.entries(all).map(([name, value]) => ({ name, value: u64(value) }));
  },
};
