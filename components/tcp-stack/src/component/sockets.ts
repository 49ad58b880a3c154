/**
 * The TCP/IP stack as a component: `libretto:net/sockets` over the Stack.
 *
 * The stack has no thread of its own: it advances inside `poll`, which
 * runs the link (receive, timers, send) and blocks the app's thread in the
 * host until a socket it asks about is ready or the deadline passes. Every
 * other call does its work and returns at once (`would-block` if it
 * cannot). Sockets are small integers.
 *
 * The stack's address comes from the component's arguments (`ip=A.B.C.D/LEN`,
 * `gateway=A.B.C.D`), which the host sets from the system manifest.
 */
import { Buffer } from 'libretto:io/buffers@0.1.0';
import * as blockq from 'libretto:block/queue@0.1.0';
import * as link from '../../../lib/link.ts';
import { num, u32, u64 } from '../../../lib/abi.ts';
import { args, HostStore, hostPlatform, linkTurn, log } from './platform.ts';
import { defaultConfig, Stack, type BindResult, type TcpListener, type UdpSocket } from '../stack.ts';
import type { TcpConnection, TcpError } from '../socket/tcp.ts';
import { ipFromTuple, ipToTuple, parseIp } from '../wire/ipv4.ts';

type ErrorCode =
  | 'would-block' | 'in-progress' | 'already' | 'is-connected' | 'not-connected' | 'connection-refused'
  | 'connection-reset' | 'connection-aborted' | 'timed-out' | 'host-unreachable' | 'address-in-use'
  | 'access-denied' | 'address-not-available' | 'invalid-argument' | 'broken-pipe' | 'message-size'
  | 'no-buffers' | 'not-supported' | 'bad-socket';

/** Raised out of a WIT function as its `error-code`. */
/**
 * Not an Error: an Error captures a backtrace when made, which costs an
 * interpreter microseconds on every EAGAIN; the component glue needs only
 * `payload`.
 */
class SocketError {
  constructor(readonly payload: ErrorCode) {}
}

function fail(code: ErrorCode): never {
  throw new SocketError(code);
}

interface Endpoint {
  addr: [number, number, number, number];
  port: number;
}

type Sock =
  | { kind: 'tcp'; port: number; nodelay: boolean; keepalive: boolean; reuse: boolean; rcvbuf: number; sndbuf: number }
  | { kind: 'listener'; l: TcpListener; nodelay: boolean }
  | { kind: 'conn'; c: TcpConnection; connecting: boolean }
  | { kind: 'udp'; u: UdpSocket | null; port: number };

const MAX_SOCKETS = 65536;
let stack: Stack | null = null;
let maxBatch = 256;
const ids: number[] = [];
const socks = new Map<number, Sock>();
let nextHandle = 1;

function theStack(): Stack {
  if (stack) return stack;
  const a = args();
  const ipArg = a.get('ip')?.at(-1);
  if (!ipArg) throw new Error('tcp-stack: no ip=A.B.C.D/LEN argument (the host sets it from the manifest)');
  const [ipText, lenText] = ipArg.split('/');
  const info = link.info();
  const cfg = defaultConfig(info.mac, parseIp(ipText), lenText === undefined ? 24 : Number(lenText), a.get('gateway') ? parseIp(a.get('gateway')!.at(-1)!) : 0);
  cfg.mtu = info.mtu;
  cfg.tso = info.offloads.tso;
  cfg.tcp.mss = info.mtu - 40;
  cfg.tcp.maxSegment = info.offloads.tso ? Math.min(65535 - 80, info.maxFrame - 94) : info.mtu - 40;
  maxBatch = info.maxBatch;
  stack = new Stack(cfg, hostPlatform);
  stack.announce();
  log(`tcp-stack: ${ipArg} on link mtu ${info.mtu}, tso ${info.offloads.tso}`);
  return stack;
}

function sock(h: number): Sock {
  return socks.get(h >>> 0) ?? fail('bad-socket');
}

function add(s: Sock): number {
  if (socks.size >= MAX_SOCKETS) fail('no-buffers');
  for (let i = 0; i < MAX_SOCKETS; i++) {
    const h = nextHandle;
    nextHandle = nextHandle >= MAX_SOCKETS - 1 ? 1 : nextHandle + 1;
    if (!socks.has(h)) {
      socks.set(h, s);
      return h;
    }
  }
  return fail('no-buffers');
}

function bindError(r: BindResult): never {
  switch (r) {
    case 'in-use':
      return fail('address-in-use');
    case 'forbidden':
      return fail('access-denied');
    case 'exhausted':
      return fail('address-not-available');
    default:
      return fail('invalid-argument');
  }
}

function tcpError(e: TcpError): ErrorCode {
  switch (e) {
    case 'connection-refused':
      return 'connection-refused';
    case 'connection-reset':
      return 'connection-reset';
    case 'timed-out':
      return 'timed-out';
    case 'host-unreachable':
      return 'host-unreachable';
    default:
      return 'connection-aborted';
  }
}

/** Flush what a call queued (segments, window updates) without waiting. */
function turn(): void {
  linkTurn(theStack(), maxBatch, ids, () => {});
}

function endpoint(e: Endpoint): { ip: number; port: number } {
  return { ip: ipFromTuple(e.addr), port: e.port };
}

function readiness(s: Sock): { readable: boolean; writable: boolean; hangup: boolean; error: boolean } {
  switch (s.kind) {
    case 'listener':
      return { readable: s.l.ready.length > 0, writable: false, hangup: false, error: false };
    case 'conn': {
      const c = s.c;
      const closed = c.state === 'CLOSED';
      const open = c.state === 'ESTABLISHED' || c.state === 'CLOSE-WAIT';
      return {
        readable: c.readable() > 0 || c.atEof() || closed || c.error !== null,
        writable: (open && c.sendRoom() > 0 && !c.finQueued) || c.error !== null,
        hangup: c.atEof() || closed,
        error: c.error !== null,
      };
    }
    case 'udp':
      return { readable: !!s.u && s.u.readable > 0, writable: true, hangup: false, error: false };
    default:
      return { readable: false, writable: false, hangup: true, error: false };
  }
}

function withErrors<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof SocketError) throw e;
    const err = e as Error;
    log(`tcp-stack: internal error: ${err.message}\n${err.stack ?? ''}`);
    throw new SocketError('no-buffers');
  }
}

export const sockets = {
  create(proto: 'tcp' | 'udp') {
    return withErrors(() => {
      theStack();
      return add(proto === 'tcp' ? { kind: 'tcp', port: 0, nodelay: false, keepalive: false, reuse: false, rcvbuf: 0, sndbuf: 0 } : { kind: 'udp', u: null, port: 0 });
    });
  },

  bind(h: number, local: Endpoint) {
    return withErrors(() => {
      const s = sock(h);
      const st = theStack();
      const { ip, port } = endpoint(local);
      if (ip !== 0 && ip !== st.cfg.ip) fail('address-not-available');
      if (s.kind === 'tcp') {
        if (s.port !== 0) fail('invalid-argument');
        if (port === 0) {
          const r = st.platform.bindEphemeral('tcp');
          if (typeof r === 'string') bindError(r);
          s.port = r as number;
        } else {
          if (st.listeners.has(port)) fail('address-in-use');
          const r = st.platform.bind('tcp', port);
          if (r !== 'ok') bindError(r);
          s.port = port;
        }
      } else if (s.kind === 'udp') {
        if (s.u) fail('invalid-argument');
        const u = st.udpBind(port);
        if (typeof u === 'string') bindError(u);
        s.u = u as UdpSocket;
        s.port = (u as UdpSocket).port;
      } else fail('invalid-argument');
    });
  },

  listen(h: number, backlog: number) {
    return withErrors(() => {
      const s = sock(h);
      if (s.kind === 'listener') return;
      if (s.kind !== 'tcp') fail('not-supported');
      const st = theStack();
      if (s.port === 0) {
        const r = st.platform.bindEphemeral('tcp');
        if (typeof r === 'string') bindError(r);
        s.port = r as number;
      }
      const l = st.tcpListen(s.port, Math.max(1, Math.min(backlog >>> 0, 4096)));
      if (typeof l === 'string') bindError(l);
      socks.set(h >>> 0, { kind: 'listener', l: l as TcpListener, nodelay: s.nodelay });
    });
  },

  accept(h: number): [number, Endpoint] {
    return withErrors(() => {
      const s = sock(h);
      if (s.kind !== 'listener') fail('invalid-argument');
      const c = theStack().accept(s.l);
      if (!c) fail('would-block');
      c.nodelay = s.nodelay;
      const handle = add({ kind: 'conn', c, connecting: false });
      return [handle, { addr: ipToTuple(c.ends.remoteIp), port: c.ends.remotePort }] as [number, Endpoint];
    });
  },

  connect(h: number, remote: Endpoint) {
    return withErrors(() => {
      const s = sock(h);
      if (s.kind === 'conn') fail(s.connecting ? 'already' : 'is-connected');
      if (s.kind !== 'tcp') fail('not-supported');
      const st = theStack();
      const { ip, port } = endpoint(remote);
      const c = st.tcpConnect(ip, port, s.port);
      if (typeof c === 'string') {
        if (c === 'invalid') fail('invalid-argument');
        bindError(c);
      }
      const conn = c as TcpConnection;
      conn.nodelay = s.nodelay;
      if (s.keepalive) conn.setKeepalive(true, st);
      socks.set(h >>> 0, { kind: 'conn', c: conn, connecting: true });
      turn();
      fail('in-progress');
    });
  },

  send(h: number, data: Uint8Array) {
    return withErrors(() => {
      const c = connOf(h, true);
      const n = c.write(data);
      if (n === 0 && data.length > 0) fail('would-block');
      return n;
    });
  },

  sendFrom(h: number, src: unknown, len: number) {
    return withErrors(() => {
      const c = connOf(h, true);
      const n = (c.sndStore as HostStore).queue.splice(src as never, u32(Math.min(len >>> 0, c.sendRoom()))) >>> 0;
      (c.sndStore as HostStore).tail += n;
      c.appended(n);
      if (n === 0 && len > 0) fail('would-block');
      return n;
    });
  },

  sendFile(h: number, file: number, offset: number, len: number) {
    return withErrors(() => {
      const c = connOf(h, true);
      const f = memfiles.get(file >>> 0) ?? fail('bad-socket');
      const off = offset >>> 0;
      if (off + (len >>> 0) > f.size) fail('invalid-argument');
      const room = Math.min(len >>> 0, c.sendRoom());
      const n = room > 0 ? (c.sndStore as HostStore).appendBuffer(f.buf, off, room) : 0;
      c.appended(n);
      if (n === 0 && len > 0) fail('would-block');
      return n;
    });
  },

  recv(h: number, max: number) {
    return withErrors(() => {
      const c = connOf(h, false);
      if (c.readable() > 0) return { tag: 'data' as const, val: c.read(Math.max(1, max >>> 0)) };
      if (c.atEof() || c.state === 'CLOSED') {
        if (c.error && c.error !== 'connection-aborted') fail(tcpError(c.error));
        return { tag: 'end-of-stream' as const };
      }
      if (c.error) fail(tcpError(c.error));
      return fail('would-block');
    });
  },

  recvInto(h: number, dst: unknown, max: number) {
    return withErrors(() => {
      const c = connOf(h, false);
      const n = Math.min(max >>> 0, c.readable());
      if (n > 0) {
        const moved = ((dst as { splice(src: unknown, n: number): number }).splice((c.rcvStore as HostStore).queue, u32(n))) >>> 0;
        (c.rcvStore as HostStore).head += moved;
        c.consumed(moved);
        return moved;
      }
      if (c.atEof() || c.state === 'CLOSED') return 0;
      return fail('would-block');
    });
  },

  recvFile(h: number, file: number, offset: number, max: number) {
    return withErrors(() => {
      const c = connOf(h, false);
      const f = memfiles.get(file >>> 0) ?? fail('invalid-argument');
      const off = offset >>> 0;
      const m = max >>> 0;
      if (off + m > f.size) fail('invalid-argument');
      const n = Math.min(m, c.readable());
      if (n > 0) {
        const moved = (c.rcvStore as HostStore).readInto(f.buf, off, n);
        c.consumed(moved);
        return moved;
      }
      if (m === 0) return 0;
      if (c.atEof() || c.state === 'CLOSED') {
        if (c.error && c.error !== 'connection-aborted') fail(tcpError(c.error));
        return 0;
      }
      if (c.error) fail(tcpError(c.error));
      return fail('would-block');
    });
  },

  sendTo(h: number, data: Uint8Array, remote: Endpoint) {
    return withErrors(() => {
      const s = sock(h);
      if (s.kind !== 'udp') fail('not-supported');
      const st = theStack();
      if (!s.u) {
        const u = st.udpBind(0);
        if (typeof u === 'string') bindError(u);
        s.u = u as UdpSocket;
        s.port = s.u.port;
      }
      const { ip, port } = endpoint(remote);
      const r = st.udpSend(s.u!, ip, port, data);
      if (r === 'too-big') fail('message-size');
      if (r === 'unresolved') fail('would-block');
      turn();
    });
  },

  recvFrom(h: number) {
    return withErrors(() => {
      const s = sock(h);
      if (s.kind !== 'udp') fail('not-supported');
      if (!s.u) fail('would-block');
      const d = theStack().udpRecv(s.u!);
      if (!d) fail('would-block');
      return { data: d!.data, peer: { addr: ipToTuple(d!.srcIp), port: d!.srcPort } };
    });
  },

  shutdown(h: number, how: 'receive' | 'send' | 'both') {
    return withErrors(() => {
      const c = connOf(h, false);
      if (how !== 'receive') c.shutdownSend(theStack());
      turn();
    });
  },

  close(h: number) {
    return withErrors(() => {
      const s = sock(h);
      const st = theStack();
      socks.delete(h >>> 0);
      if (s.kind === 'conn') st.close(s.c);
      else if (s.kind === 'listener') st.closeListener(s.l);
      else if (s.kind === 'udp' && s.u) st.udpClose(s.u);
      else if (s.kind === 'tcp' && s.port !== 0) st.platform.unbind('tcp', s.port);
      turn();
    });
  },

  setOption(h: number, v: { tag: string; val: boolean | number }) {
    return withErrors(() => {
      const s = sock(h);
      const st = theStack();
      switch (v.tag) {
        case 'no-delay':
          if (s.kind === 'conn') s.c.nodelay = !!v.val;
          else if (s.kind === 'tcp' || s.kind === 'listener') s.nodelay = !!v.val;
          else fail('not-supported');
          return;
        case 'keep-alive':
          if (s.kind === 'conn') s.c.setKeepalive(!!v.val, st);
          else if (s.kind === 'tcp') s.keepalive = !!v.val;
          else fail('not-supported');
          return;
        case 'reuse-address':
          if (s.kind === 'tcp') s.reuse = !!v.val;
          return;
        case 'receive-buffer':
        case 'send-buffer': {
          const n = Number(v.val) >>> 0;
          if (n < 1024 || n > 64 << 20) fail('invalid-argument');
          if (s.kind === 'tcp') {
            if (v.tag === 'receive-buffer') s.rcvbuf = n;
            else s.sndbuf = n;
          }
          // Buffers of open connections keep their size (as after connect(2)).
          return;
        }
        default:
          fail('invalid-argument');
      }
    });
  },

  getOption(h: number, name: string) {
    return withErrors(() => {
      const s = sock(h);
      const cfg = theStack().config;
      switch (name) {
        case 'no-delay':
          return { tag: 'no-delay', val: s.kind === 'conn' ? s.c.nodelay : s.kind === 'tcp' || s.kind === 'listener' ? s.nodelay : false };
        case 'keep-alive':
          return { tag: 'keep-alive', val: s.kind === 'conn' ? s.c.keepalive : s.kind === 'tcp' ? s.keepalive : false };
        case 'reuse-address':
          return { tag: 'reuse-address', val: s.kind === 'tcp' ? s.reuse : false };
        case 'receive-buffer':
          return { tag: 'receive-buffer', val: s.kind === 'conn' ? s.c.rcvStore.capacity : s.kind === 'tcp' && s.rcvbuf ? s.rcvbuf : cfg.rcvBuf };
        case 'send-buffer':
          return { tag: 'send-buffer', val: s.kind === 'conn' ? s.c.sndStore.capacity : s.kind === 'tcp' && s.sndbuf ? s.sndbuf : cfg.sndBuf };
        default:
          return fail('invalid-argument');
      }
    });
  },

  localEndpoint(h: number): Endpoint {
    return withErrors(() => {
      const s = sock(h);
      const ip = ipToTuple(theStack().cfg.ip);
      if (s.kind === 'conn') return { addr: ip, port: s.c.ends.localPort };
      if (s.kind === 'listener') return { addr: ip, port: s.l.port };
      return { addr: ip, port: s.kind === 'udp' ? s.port : s.port };
    });
  },

  remoteEndpoint(h: number): Endpoint {
    return withErrors(() => {
      const s = sock(h);
      if (s.kind !== 'conn') fail('not-connected');
      return { addr: ipToTuple(s.c.ends.remoteIp), port: s.c.ends.remotePort };
    });
  },

  takeError(h: number) {
    const s = socks.get(h >>> 0);
    if (!s || s.kind !== 'conn' || !s.c.error) return undefined;
    const e = tcpError(s.c.error);
    return e;
  },

  poll(interests: { socket: number; events: { readable: boolean; writable: boolean; hangup: boolean; error: boolean } }[], deadlineNs: unknown) {
    return withErrors(() => {
      const st = theStack();
      const deadline = num(deadlineNs as bigint | number);
      for (let round = 0; ; round++) {
        const got = linkTurn(st, maxBatch, ids, () => {});
        const events = [];
        for (const i of interests) {
          if (i.socket >>> 0 === STORAGE_HANDLE) {
            if (i.events.readable && blockq.pending() >>> 0 > 0) events.push({ socket: i.socket, events: { ...NOTHING, readable: true } });
            continue;
          }
          const s = socks.get(i.socket >>> 0);
          if (!s) {
            events.push({ socket: i.socket, events: { readable: false, writable: false, hangup: true, error: true } });
            continue;
          }
          if (s.kind === 'conn' && s.connecting && (s.c.state !== 'SYN-SENT' && s.c.state !== 'SYN-RECEIVED')) s.connecting = false;
          const r = readiness(s);
          const want = i.events;
          const hit = { readable: want.readable && r.readable, writable: want.writable && r.writable, hangup: r.hangup, error: r.error };
          if (hit.readable || hit.writable || hit.hangup || hit.error) events.push({ socket: i.socket, events: hit });
        }
        if (events.length > 0) return events;
        const now = link.now();
        if (now >= deadline) return events;
        if (got > 0) continue; // more may be waiting
        const wake = Math.min(deadline, st.nextDeadline(), now + 1e9);
        if (link.wait(Math.max(wake, now)) === 'stop') return events;
      }
    });
  },

  now() {
    return u64(link.now());
  },
};

const NOTHING = { readable: false, writable: false, hangup: false, error: false };

/** In `poll` interests, the handle that stands for the block completion queue. */
const STORAGE_HANDLE = 65535;

/** Raised out of `storage.submit` as its `submit-error`. */
/**
 * Not an Error: an Error captures a backtrace when made, which costs an
 * interpreter microseconds on every EAGAIN; the component glue needs only
 * `payload`.
 */
class StorageError {
  constructor(readonly payload: string) {}
}

type Opcode = 'read' | 'write' | 'flush' | 'deallocate' | 'write-zeroes';
interface StorageIo { tag: number; opcode: Opcode; nsid: number; slba: unknown; nlb: number; fua: boolean; file: number; offset: number }

/**
 * Block storage for the app: commands go to the app's block queue (the
 * host routes them through the block server or to a device queue of the
 * app's own); their data moves through the in-memory files below, so a
 * block read leaves on a socket with `send-file` and a socket's bytes
 * reach a block with `recv-file`, never through JavaScript.
 */
export const storage = {
  namespaces() {
    return blockq.namespaces();
  },
  submit(ios: StorageIo[]) {
    const cmds = ios.map((io) => {
      const moves = io.opcode === 'read' || io.opcode === 'write';
      const f = moves ? memfiles.get(io.file >>> 0) : undefined;
      return {
        cid: io.tag,
        opcode: io.opcode,
        nsid: io.nsid,
        slba: io.slba,
        nlb: io.nlb,
        fua: io.fua,
        // An unknown file goes without a buffer: the command completes with invalid-field.
        buffer: f ? f.buf : undefined,
        bufferOffset: f ? io.offset : 0,
      };
    });
    try {
      blockq.submit(cmds as never);
    } catch (e) {
      const p = (e as { payload?: unknown })?.payload ?? e;
      throw new StorageError(typeof p === 'string' ? p : 'queue-full');
    }
  },
  reap(max: number) {
    return blockq.reap(max).map((c) => ({ tag: c.cid, status: c.status }));
  },
};

/** In-memory files: host buffers the stack owns, sent with `send-file`. */
const memfiles = new Map<number, { buf: Buffer; size: number }>();
let nextFile = 1;
const MAX_FILE = 64 << 20;

export const files = {
  create(len: number) {
    return withErrors(() => {
      const n = len >>> 0;
      if (n > MAX_FILE) fail('no-buffers');
      if (memfiles.size >= 65536) fail('no-buffers');
      while (memfiles.has(nextFile)) nextFile = nextFile >= 65535 ? 1 : nextFile + 1;
      const id = nextFile;
      memfiles.set(id, { buf: Buffer.create(u32(n)), size: n });
      nextFile = nextFile >= 65535 ? 1 : nextFile + 1;
      return id;
    });
  },
  write(file: number, offset: number, data: Uint8Array) {
    return withErrors(() => {
      const f = memfiles.get(file >>> 0) ?? fail('bad-socket');
      if ((offset >>> 0) + data.length > f.size) fail('invalid-argument');
      f.buf.write(u32(offset), data);
    });
  },
  size(file: number) {
    return withErrors(() => (memfiles.get(file >>> 0) ?? fail('bad-socket')).size);
  },
  close(file: number) {
    return withErrors(() => {
      const f = memfiles.get(file >>> 0) ?? fail('bad-socket');
      memfiles.delete(file >>> 0);
      (f.buf as unknown as { [Symbol.dispose]?: () => void })[Symbol.dispose]?.();
    });
  },
};

function connOf(h: number, forWrite: boolean): TcpConnection {
  const s = sock(h);
  if (s.kind !== 'conn') return fail(s.kind === 'listener' ? 'invalid-argument' : 'not-connected');
  const c = s.c;
  if (forWrite) {
    if (c.error) fail(tcpError(c.error));
    if (c.finQueued) fail('broken-pipe');
    if (c.state === 'SYN-SENT' || c.state === 'SYN-RECEIVED') fail('would-block');
    if (c.state === 'CLOSED') fail('not-connected');
  }
  return c;
}
