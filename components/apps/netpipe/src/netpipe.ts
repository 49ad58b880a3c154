/**
 * netpipe: the receiver that Debian's NPtcp (netpipe-tcp) measures
 * against: `NPtcp -h IP` on Linux is the transmitter, this app plays
 * `NPtcp` with no -h. The protocol and how its modes are told apart are in
 * proto.ts; this file moves the bytes.
 *
 * Payload never passes through JavaScript: a message is spliced from the
 * socket into an in-memory file (`splice-to-file`) and sent back from it
 * (`sendfile`); JavaScript reads and writes only the 4- to 6-byte sync,
 * repeat, time and QUIT words.
 *
 * One epoll loop serves any number of runs at once, one per connection,
 * except that a run in Reset mode (-s, -r) goes on on the next connection
 * accepted after its QUIT.
 *
 * Arguments: port=PORT (default 5002, as NPtcp's -P), and the receiver's
 * side of NPtcp's options that change what crosses the wire: start=N (-l),
 * perturbation=N (-p), integrity=1 (-i), stream=auto|yes|no (-s: told
 * apart by itself unless given), bidir=1 (-2 with both directions at
 * once; without it -2 is served as a ping-pong), buffer=BYTES (-b:
 * SO_SNDBUF and SO_RCVBUF of each connection).
 */
import * as zerocopy from 'libretto:posix/zerocopy@0.1.0';
import * as epoll from 'libretto:posix/epoll@0.1.0';
import { u64, num } from '../../../lib/abi.ts';
import { errno, EventLoop, host, io, isAgain, listenTcp, socket } from '../../lib/posix.ts';
import { Receiver, type Options } from './proto.ts';

/** The largest in-memory file (the shim's limit): the largest message a run may use. */
const MAX_BUFFER = 64 << 20;
/** How long a Reset-mode run waits for its next connection. */
const RECONNECT_MS = 30_000;
/** How long the first message of a Reset-mode run waits for a second one (streaming) before it is answered. */
const PROBE_MS = 200;
/** Operations one run may do per wake, so one run cannot starve another. */
const OPS_PER_WAKE = 4096;

const stats = {
  accepted: 0,
  runs: 0,
  'runs.done': 0,
  'runs.failed': 0,
  'runs.aborted': 0,
  resets: 0,
  points: 0,
  messages: 0,
  bytes: 0,
  'max-size': 0,
};

const clock: () => number = (() => {
  const perf = (globalThis as { performance?: { now(): number } }).performance;
  if (perf && typeof perf.now === 'function') return () => perf.now() / 1000;
  return () => Date.now() / 1000;
})();

interface Run {
  id: number;
  rx: Receiver;
  /** The connection the run is on; -1 while it waits for its next one. */
  fd: number;
  peer: string;
  /** A control word being read. */
  ctl: Uint8Array;
  have: number;
  /** Bytes of the current write, message or received half of an exchange done. */
  off: number;
  /** The sent half of an exchange. */
  sendOff: number;
  /** When a probe gives up (ms of `clock`), 0 if none is running. */
  probeUntil: number;
  /** When a run waiting for its next connection is forgotten. */
  reconnectUntil: number;
  memfd: number;
  memfdSize: number;
  /** Counters already added to `stats`. */
  counted: { points: number; messages: number; bytes: number; resets: number };
}

export const server = {
  run() {
    const args = new Map(host.args());
    const port = Number(args.get('port') ?? 5002);
    const flag = (k: string) => ['1', 'yes', 'true', 'on'].includes(String(args.get(k) ?? '').toLowerCase());
    const options: Options = { now: clock };
    if (args.has('start')) options.start = Number(args.get('start'));
    if (args.has('perturbation')) options.perturbation = Number(args.get('perturbation'));
    if (args.has('integrity')) options.integrity = flag('integrity');
    if (args.has('bidir')) options.bidir = flag('bidir');
    const stream = String(args.get('stream') ?? 'auto');
    if (stream !== 'auto' && stream !== 'yes' && stream !== 'no') {
      const msg = `netpipe: stream=${stream}: expected auto, yes or no`;
      host.log(msg);
      return { tag: 'failed' as const, val: msg };
    }
    options.stream = stream;
    if (options.start !== undefined && !(Number.isInteger(options.start) && options.start >= 1)) {
      const msg = `netpipe: start=${args.get('start')}: expected a whole number of bytes, 1 or more`;
      host.log(msg);
      return { tag: 'failed' as const, val: msg };
    }
    if (options.perturbation !== undefined && !(Number.isInteger(options.perturbation) && options.perturbation >= 0)) {
      const msg = `netpipe: perturbation=${args.get('perturbation')}: expected a whole number, 0 or more`;
      host.log(msg);
      return { tag: 'failed' as const, val: msg };
    }
    const buffer = args.has('buffer') ? Number(args.get('buffer')) : 0;

    const loop = new EventLoop();
    let lfd: number;
    try {
      lfd = listenTcp(port);
    } catch (e) {
      const msg = `netpipe: cannot listen on port ${port}: ${errno(e) ?? String(e)}`;
      host.log(msg);
      return { tag: 'failed' as const, val: msg };
    }
    epoll.ctl(loop.ep, 'add', lfd, { in: true, out: false, err: false, hup: false, rdhup: false, et: false, oneshot: false }, u64(lfd));
    host.log(`netpipe: NPtcp receiver listening on port ${port}`);

    const byFd = new Map<number, Run>();
    /** A Reset-mode run waiting for its transmitter to connect again. */
    let waiting: Run | null = null;
    let nextId = 1;

    const count = (r: Run) => {
      const p = r.rx.progress;
      stats.points += p.points - r.counted.points;
      stats.messages += p.messages - r.counted.messages;
      stats.bytes += p.bytes - r.counted.bytes;
      stats.resets += p.resets - r.counted.resets;
      stats['max-size'] = Math.max(stats['max-size'], p.maxSize);
      r.counted = { points: p.points, messages: p.messages, bytes: p.bytes, resets: p.resets };
    };

    const describe = (r: Run) => {
      const p = r.rx.progress;
      const mode = p.reset === null ? '' : `${p.streaming ? 'streaming' : 'ping-pong'}${p.reset ? ' with Reset' : ''}${options.bidir ? ', bi-directional' : ''}, `;
      return `${mode}${p.points} sizes up to ${p.maxSize} bytes, ${p.messages} messages, ${p.bytes} bytes`;
    };

    const dropConn = (r: Run) => {
      if (r.fd < 0) return;
      byFd.delete(r.fd);
      loop.close(r.fd);
      r.fd = -1;
    };

    const end = (r: Run, how: 'done' | 'failed' | 'aborted', why = '') => {
      count(r);
      dropConn(r);
      if (waiting === r) waiting = null;
      if (r.memfd >= 0) {
        try {
          io.close(r.memfd);
        } catch {
          // gone already
        }
        r.memfd = -1;
      }
      stats[`runs.${how}`]++;
      if (how === 'done') host.log(`netpipe: run ${r.id} from ${r.peer} done: ${describe(r)}`);
      else host.log(`netpipe: run ${r.id} from ${r.peer} ${how}: ${why} (${describe(r)})`);
    };

    /** An in-memory file of at least `need` bytes for the run. */
    const ensure = (r: Run, need: number): boolean => {
      if (need <= r.memfdSize) return true;
      if (need > MAX_BUFFER) return false;
      // Whole MiB, at least double the last one, at most the limit.
      const MiB = 1 << 20;
      const size = Math.min(MAX_BUFFER, Math.ceil(Math.max(need, r.memfdSize * 2, MiB) / MiB) * MiB);
      const fd = zerocopy.memfdCreate(size);
      if (r.memfd >= 0) io.close(r.memfd);
      r.memfd = fd;
      r.memfdSize = size;
      return true;
    };

    const interest = (r: Run, wantIn: boolean, wantOut: boolean) => {
      if (r.fd >= 0) loop.interest(r.fd, wantIn, wantOut);
    };

    /**
     * After a write, the peer's next bytes (an answer to it) cannot be
     * in yet: rather than a receive that would fail, wait for them in
     * epoll (level-triggered, so bytes already there wake it at once).
     */
    const awaitsPeer = (r: Run, op: { kind: string }): boolean => {
      if (op.kind !== 'read' && op.kind !== 'recv') return false;
      interest(r, true, false);
      return true;
    };

    /** Do what the run's receiver asks until the socket would block. */
    const drive = (r: Run) => {
      for (let ops = 0; ops < OPS_PER_WAKE; ops++) {
        if (r.fd < 0) return;
        const op = r.rx.op;
        const fd = r.fd;
        try {
          switch (op.kind) {
            case 'read': {
              const got = io.read(fd, op.len - r.have);
              if (got.length === 0) return end(r, 'aborted', 'the transmitter closed the connection');
              r.ctl.set(got, r.have);
              r.have += got.length;
              if (r.have < op.len) continue;
              const word = r.ctl.slice(0, op.len);
              r.have = 0;
              r.rx.resume(word);
              continue;
            }
            case 'write': {
              const n = io.write(fd, r.off === 0 ? op.bytes : op.bytes.subarray(r.off));
              r.off += n;
              if (r.off < op.bytes.length) {
                interest(r, false, true);
                return;
              }
              r.off = 0;
              if (awaitsPeer(r, r.rx.resume())) return;
              continue;
            }
            case 'recv': {
              if (!ensure(r, op.len)) return end(r, 'failed', `a ${op.len}-byte message is larger than the ${MAX_BUFFER}-byte buffer`);
              const n = zerocopy.spliceToFile(fd, r.memfd, r.off, op.len - r.off);
              if (n === 0) return end(r, 'aborted', 'the transmitter closed the connection mid-message');
              r.off += n;
              if (r.off < op.len) continue;
              r.off = 0;
              r.rx.resume();
              continue;
            }
            case 'send': {
              const n = zerocopy.sendfile(fd, r.memfd, r.off, op.len - r.off);
              r.off += n;
              if (r.off < op.len) {
                if (n === 0) {
                  interest(r, false, true);
                  return;
                }
                continue;
              }
              r.off = 0;
              if (awaitsPeer(r, r.rx.resume())) return;
              continue;
            }
            case 'exchange': {
              if (!ensure(r, op.len)) return end(r, 'failed', `a ${op.len}-byte message is larger than the ${MAX_BUFFER}-byte buffer`);
              let moved = false;
              if (r.sendOff < op.len) {
                try {
                  const n = zerocopy.sendfile(fd, r.memfd, r.sendOff, op.len - r.sendOff);
                  r.sendOff += n;
                  moved ||= n > 0;
                } catch (e) {
                  if (!isAgain(e)) throw e;
                }
              }
              if (r.off < op.len) {
                try {
                  const n = zerocopy.spliceToFile(fd, r.memfd, r.off, op.len - r.off);
                  if (n === 0) return end(r, 'aborted', 'the transmitter closed the connection mid-message');
                  r.off += n;
                  moved = true;
                } catch (e) {
                  if (!isAgain(e)) throw e;
                }
              }
              if (r.off === op.len && r.sendOff === op.len) {
                r.off = 0;
                r.sendOff = 0;
                r.rx.resume();
                continue;
              }
              if (moved) continue;
              interest(r, r.off < op.len, r.sendOff < op.len);
              return;
            }
            case 'probe': {
              if (!ensure(r, 2 * op.len)) return end(r, 'failed', 'no buffer for the probe');
              if (r.probeUntil === 0) r.probeUntil = clock() * 1000 + PROBE_MS;
              let n: number;
              try {
                // Past the first message, which a ping-pong sends back.
                n = zerocopy.spliceToFile(fd, r.memfd, op.len, op.len);
                if (n === 0) return end(r, 'aborted', 'the transmitter closed the connection');
              } catch (e) {
                if (!isAgain(e)) throw e;
                if (clock() * 1000 < r.probeUntil) {
                  interest(r, true, false);
                  return;
                }
                n = 0; // nothing more came: a ping-pong
              }
              r.probeUntil = 0;
              r.rx.resume(n);
              continue;
            }
            case 'reconnect': {
              count(r);
              dropConn(r);
              r.reconnectUntil = clock() * 1000 + RECONNECT_MS;
              if (waiting && waiting !== r) end(waiting, 'aborted', 'another run reset its connection first');
              waiting = r;
              r.rx.resume();
              return;
            }
            case 'done':
              return end(r, 'done');
            case 'fail':
              return end(r, 'failed', op.why);
          }
        } catch (e) {
          if (isAgain(e)) {
            const k = op.kind;
            interest(r, k === 'read' || k === 'recv' || k === 'probe', k === 'write' || k === 'send');
            return;
          }
          return end(r, 'aborted', `${op.kind}: ${errno(e) ?? String(e)}`);
        }
      }
      // Out of budget for this wake: come back when the socket says so.
      const k = r.rx.op.kind;
      interest(r, k === 'read' || k === 'recv' || k === 'probe' || k === 'exchange', k === 'write' || k === 'send' || k === 'exchange');
    };

    const accept = () => {
      for (;;) {
        let cfd: number;
        let addr: { addr: [number, number, number, number]; port: number };
        try {
          [cfd, addr] = socket.accept(lfd);
        } catch (e) {
          if (!isAgain(e)) host.log(`netpipe: accept: ${errno(e) ?? String(e)}`);
          return;
        }
        stats.accepted++;
        io.setNonblocking(cfd, true);
        socket.setsockopt(cfd, 'tcp-nodelay', 1);
        if (buffer > 0) {
          socket.setsockopt(cfd, 'so-sndbuf', buffer);
          socket.setsockopt(cfd, 'so-rcvbuf', buffer);
        }
        const peer = `${addr.addr.join('.')}:${addr.port}`;
        let r: Run;
        if (waiting && clock() * 1000 < waiting.reconnectUntil) {
          // A Reset-mode run's transmitter connects again.
          r = waiting;
          waiting = null;
          r.peer = peer;
        } else {
          if (waiting) end(waiting, 'aborted', 'the transmitter did not connect again');
          r = {
            id: nextId++,
            rx: new Receiver(options),
            fd: -1,
            peer,
            ctl: new Uint8Array(8),
            have: 0,
            off: 0,
            sendOff: 0,
            probeUntil: 0,
            reconnectUntil: 0,
            memfd: -1,
            memfdSize: 0,
            counted: { points: 0, messages: 0, bytes: 0, resets: 0 },
          };
          stats.runs++;
          host.log(`netpipe: run ${r.id} from ${peer}`);
        }
        r.fd = cfd;
        byFd.set(cfd, r);
        drive(r);
      }
    };

    for (let turn = 1; ; turn++) {
      // The nearest deadline: a probe's end, a reconnect's end.
      const nowMs = clock() * 1000;
      let timeout = 1000;
      for (const r of byFd.values()) if (r.probeUntil > 0) timeout = Math.min(timeout, Math.max(0, Math.ceil(r.probeUntil - nowMs)));
      if (waiting) timeout = Math.min(timeout, Math.max(0, Math.ceil(waiting.reconnectUntil - nowMs)));
      const events = epoll.wait(loop.ep, 256, timeout);
      if ((events.length === 0 || (turn & 1023) === 0) && host.stopping()) break;
      for (const e of events) {
        const fd = num(e.data as bigint | number);
        if (fd === lfd) {
          accept();
          continue;
        }
        const r = byFd.get(fd);
        if (r) drive(r);
      }
      // Deadlines that passed.
      const now2 = clock() * 1000;
      for (const r of [...byFd.values()]) if (r.probeUntil > 0 && now2 >= r.probeUntil) drive(r);
      if (waiting && now2 >= waiting.reconnectUntil) end(waiting, 'aborted', 'the transmitter did not connect again');
      if ((turn & 63) === 0) for (const r of byFd.values()) count(r);
    }
    for (const r of [...byFd.values()]) end(r, 'aborted', 'the app is stopping');
    if (waiting) end(waiting, 'aborted', 'the app is stopping');
    loop.close(lfd);
    return { tag: 'stopped' as const };
  },
};

export const control = {
  describe() {
    return { name: 'netpipe', version: `0.1.0+${__LIBRETTO_BACKEND__}` };
  },
  stats() {
    return Object.entries(stats).map(([name, value]) => ({ name, value: u64(value) }));
  },
};
