/**
 * The POSIX shim: file descriptors, BSD sockets and epoll over the app's
 * TCP/IP stack (`libretto:net/sockets`), so event-driven servers read like
 * their C originals.
 *
 * - Descriptors start at 3 (0 to 2 are stdio in C; here they are never
 *   handed out). A descriptor is a socket or an epoll instance.
 * - Sockets are blocking unless set non-blocking (O_NONBLOCK via
 *   `set-nonblocking`, as fcntl). A blocking call that cannot proceed waits
 *   in the stack's `poll`, which blocks the app's thread in the host until
 *   the socket is ready: never a busy loop.
 * - epoll is level-triggered. EPOLLONESHOT disarms a descriptor after it is
 *   reported once, until EPOLL_CTL_MOD re-arms it; EPOLLET is accepted and
 *   treated as level-triggered (a server written for ET, which reads until
 *   EAGAIN, works unchanged).
 * - A block namespace opened with `blockdev.open-namespace` is a
 *   descriptor too: commands go to the stack's storage queue in batches and
 *   completions are sorted to the descriptor that submitted them; epoll
 *   reports it readable while completions wait, as for an io_uring fd.
 * - Errors are errno names, as the WIT enum has them.
 */
import * as sockets from 'libretto:net/sockets@0.1.0';
import * as memfiles from 'libretto:net/files@0.1.0';
import * as storage from 'libretto:block/storage@0.1.0';
import { NO_DEADLINE, num, u64 } from '../../lib/abi.ts';

type Errno =
  | 'eagain' | 'einprogress' | 'ealready' | 'eisconn' | 'enotconn' | 'econnrefused' | 'econnreset' | 'econnaborted'
  | 'etimedout' | 'ehostunreach' | 'eaddrinuse' | 'eacces' | 'eaddrnotavail' | 'einval' | 'epipe' | 'emsgsize'
  | 'enobufs' | 'eopnotsupp' | 'ebadf' | 'emfile' | 'enoent' | 'eexist' | 'eio' | 'enospc' | 'erofs' | 'eintr'
  | 'enosys' | 'efault' | 'enotsock' | 'enotdir' | 'eisdir' | 'efbig';

/**
 * Not an Error: an Error captures a backtrace when made, which costs an
 * interpreter microseconds on every EAGAIN; the component glue needs only
 * `payload`.
 */
class PosixError {
  constructor(readonly payload: Errno) {}
}

function fail(e: Errno): never {
  throw new PosixError(e);
}

/** The stack's error codes and their errno. */
const ERRNO: Record<string, Errno> = {
  'would-block': 'eagain',
  'in-progress': 'einprogress',
  already: 'ealready',
  'is-connected': 'eisconn',
  'not-connected': 'enotconn',
  'connection-refused': 'econnrefused',
  'connection-reset': 'econnreset',
  'connection-aborted': 'econnaborted',
  'timed-out': 'etimedout',
  'host-unreachable': 'ehostunreach',
  'address-in-use': 'eaddrinuse',
  'access-denied': 'eacces',
  'address-not-available': 'eaddrnotavail',
  'invalid-argument': 'einval',
  'broken-pipe': 'epipe',
  'message-size': 'emsgsize',
  'no-buffers': 'enobufs',
  'not-supported': 'eopnotsupp',
  'bad-socket': 'ebadf',
};

function code(e: unknown): string {
  const p = (e as { payload?: unknown })?.payload ?? e;
  return typeof p === 'string' ? p : 'no-buffers';
}

/** Call into the stack, turning its error code into errno. */
function net<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof PosixError) throw e;
    throw new PosixError(ERRNO[code(e)] ?? 'eio');
  }
}

interface SocketFd {
  kind: 'socket';
  s: number;
  stream: boolean;
  nonblocking: boolean;
}

interface FileFd {
  kind: 'file';
  file: number;
  size: number;
}

interface Completion {
  tag: number;
  status: string;
}

interface BlockFd {
  kind: 'block';
  nsid: number;
  /** Completions reaped from the stack for this descriptor, not yet taken. */
  done: Completion[];
  /** Commands submitted and not yet completed. */
  inflight: number;
}

interface EpollEntry {
  events: Events;
  data: unknown;
  armed: boolean;
}

interface EpollFd {
  kind: 'epoll';
  watched: Map<number, EpollEntry>;
}

interface Events {
  in: boolean;
  out: boolean;
  err: boolean;
  hup: boolean;
  rdhup: boolean;
  et: boolean;
  oneshot: boolean;
}

const MAX_FDS = 65536;
type Fd = SocketFd | EpollFd | FileFd | BlockFd;
const fds = new Map<number, Fd>();
let nextFd = 3;

function newFd(entry: Fd): number {
  if (fds.size >= MAX_FDS - 3) fail('emfile');
  // The lowest free descriptor, as POSIX requires (searching from the last one handed out first).
  for (let i = 0; i < MAX_FDS; i++) {
    const fd = nextFd;
    nextFd = nextFd >= MAX_FDS - 1 ? 3 : nextFd + 1;
    if (!fds.has(fd)) {
      fds.set(fd, entry);
      return fd;
    }
  }
  return fail('emfile');
}

function sockFd(fd: number): SocketFd {
  const e = fds.get(fd);
  if (!e) fail('ebadf');
  if (e.kind !== 'socket') fail('enotsock');
  return e;
}

const NONE = { readable: false, writable: false, hangup: false, error: false };

/** Wait until the socket is ready for `what` (a blocking call). */
function block(f: SocketFd, what: 'readable' | 'writable'): void {
  net(() => sockets.poll([{ socket: f.s, events: { ...NONE, [what]: true } }], NO_DEADLINE));
}

/** Run `op`; on EAGAIN, block (unless non-blocking) and retry. */
function retry<T>(f: SocketFd, what: 'readable' | 'writable', op: () => T): T {
  for (;;) {
    try {
      return net(op);
    } catch (e) {
      if (!(e instanceof PosixError) || e.payload !== 'eagain' || f.nonblocking) throw e;
      block(f, what);
    }
  }
}

type SockAddr = { addr: [number, number, number, number]; port: number };

export const types = {};

export const io = {
  read(fd: number, max: number): Uint8Array {
    const f = sockFd(fd);
    if (!f.stream) return socket.recvfrom(fd, max)[0];
    return retry(f, 'readable', () => {
      const r = sockets.recv(f.s, max);
      return r.tag === 'data' ? r.val : new Uint8Array(0);
    });
  },
  write(fd: number, data: Uint8Array): number {
    const f = sockFd(fd);
    if (data.length === 0) return 0;
    return retry(f, 'writable', () => sockets.send(f.s, data));
  },
  writev(fd: number, iov: Uint8Array[]): number {
    const total = iov.reduce((n, b) => n + b.length, 0);
    if (total === 0) return 0;
    const all = new Uint8Array(total);
    let at = 0;
    for (const b of iov) {
      all.set(b, at);
      at += b.length;
    }
    return io.write(fd, all);
  },
  close(fd: number): void {
    const e = fds.get(fd);
    if (!e) fail('ebadf');
    fds.delete(fd);
    if (e.kind === 'file') net(() => memfiles.close(e.file));
    if (e.kind === 'socket') net(() => sockets.close(e.s));
    // Completions of a closed namespace's commands are dropped when they arrive.
    for (const other of fds.values()) if (other.kind === 'epoll') other.watched.delete(fd);
  },
  setNonblocking(fd: number, on: boolean): void {
    sockFd(fd).nonblocking = on;
  },
};

export const socket = {
  socket(kind: 'sock-stream' | 'sock-dgram'): number {
    const s = net(() => sockets.create(kind === 'sock-stream' ? 'tcp' : 'udp'));
    return newFd({ kind: 'socket', s, stream: kind === 'sock-stream', nonblocking: false });
  },
  bind(fd: number, addr: SockAddr): void {
    const f = sockFd(fd);
    net(() => sockets.bind(f.s, addr));
  },
  listen(fd: number, backlog: number): void {
    const f = sockFd(fd);
    if (!f.stream) fail('eopnotsupp');
    net(() => sockets.listen(f.s, Math.max(1, Math.min(backlog | 0 || 128, 4096))));
  },
  accept(fd: number): [number, SockAddr] {
    const f = sockFd(fd);
    const [s, peer] = retry(f, 'readable', () => sockets.accept(f.s));
    return [newFd({ kind: 'socket', s, stream: true, nonblocking: false }), peer];
  },
  connect(fd: number, addr: SockAddr): void {
    const f = sockFd(fd);
    try {
      net(() => sockets.connect(f.s, addr));
    } catch (e) {
      if (!(e instanceof PosixError) || e.payload !== 'einprogress' || f.nonblocking) throw e;
      // A blocking connect waits for the handshake.
      for (;;) {
        block(f, 'writable');
        const err = sockets.takeError(f.s);
        if (err) fail(ERRNO[err] ?? 'eio');
        try {
          net(() => sockets.remoteEndpoint(f.s));
          const [ready] = sockets.poll([{ socket: f.s, events: { ...NONE, writable: true } }], u64(0));
          if (ready?.events.writable) return;
        } catch (x) {
          if (!(x instanceof PosixError) || x.payload !== 'enotconn') throw x;
        }
      }
    }
  },
  send(fd: number, data: Uint8Array): number {
    return io.write(fd, data);
  },
  recv(fd: number, max: number): Uint8Array {
    return io.read(fd, max);
  },
  sendto(fd: number, data: Uint8Array, addr: SockAddr): number {
    const f = sockFd(fd);
    retry(f, 'writable', () => sockets.sendTo(f.s, data, addr));
    return data.length;
  },
  recvfrom(fd: number, max: number): [Uint8Array, SockAddr] {
    const f = sockFd(fd);
    const d = retry(f, 'readable', () => sockets.recvFrom(f.s));
    return [d.data.length > max ? d.data.subarray(0, max) : d.data, d.peer];
  },
  shutdown(fd: number, how: 'shut-rd' | 'shut-wr' | 'shut-rdwr'): void {
    const f = sockFd(fd);
    net(() => sockets.shutdown(f.s, how === 'shut-rd' ? 'receive' : how === 'shut-wr' ? 'send' : 'both'));
  },
  setsockopt(fd: number, opt: string, value: number): void {
    const f = sockFd(fd);
    const on = value !== 0;
    const v =
      opt === 'tcp-nodelay' ? { tag: 'no-delay', val: on }
      : opt === 'so-reuseaddr' ? { tag: 'reuse-address', val: on }
      : opt === 'so-keepalive' ? { tag: 'keep-alive', val: on }
      : opt === 'so-rcvbuf' ? { tag: 'receive-buffer', val: value >>> 0 }
      : opt === 'so-sndbuf' ? { tag: 'send-buffer', val: value >>> 0 }
      : fail('einval');
    net(() => sockets.setOption(f.s, v as never));
  },
  getsockopt(fd: number, opt: string): number {
    const f = sockFd(fd);
    if (opt === 'so-error') {
      const e = sockets.takeError(f.s);
      return e ? ERRNO_NUMBER[ERRNO[e] ?? 'eio'] : 0;
    }
    const name = opt === 'tcp-nodelay' ? 'no-delay' : opt === 'so-reuseaddr' ? 'reuse-address' : opt === 'so-keepalive' ? 'keep-alive' : opt === 'so-rcvbuf' ? 'receive-buffer' : opt === 'so-sndbuf' ? 'send-buffer' : fail('einval');
    const v = net(() => sockets.getOption(f.s, name as never)) as { tag: string; val: boolean | number };
    return typeof v.val === 'boolean' ? (v.val ? 1 : 0) : v.val;
  },
  getsockname(fd: number): SockAddr {
    const f = sockFd(fd);
    return net(() => sockets.localEndpoint(f.s));
  },
  getpeername(fd: number): SockAddr {
    const f = sockFd(fd);
    return net(() => sockets.remoteEndpoint(f.s));
  },
};

/** Linux's errno numbers, for SO_ERROR. */
const ERRNO_NUMBER: Record<Errno, number> = {
  eagain: 11, einprogress: 115, ealready: 114, eisconn: 106, enotconn: 107, econnrefused: 111, econnreset: 104,
  econnaborted: 103, etimedout: 110, ehostunreach: 113, eaddrinuse: 98, eacces: 13, eaddrnotavail: 99, einval: 22,
  epipe: 32, emsgsize: 90, enobufs: 105, eopnotsupp: 95, ebadf: 9, emfile: 24, enoent: 2, eexist: 17, eio: 5,
  enospc: 28, erofs: 30, eintr: 4, enosys: 38, efault: 14, enotsock: 88, enotdir: 20, eisdir: 21, efbig: 27,
};

export const zerocopy = {
  memfdCreate(len: number): number {
    const file = net(() => memfiles.create(len));
    return newFd({ kind: 'file', file, size: len >>> 0 });
  },
  pwrite(fd: number, offset: number, data: Uint8Array): number {
    const e = fds.get(fd);
    if (!e) fail('ebadf');
    if (e.kind !== 'file') fail('einval');
    if ((offset >>> 0) + data.length > e.size) fail('efbig');
    net(() => memfiles.write(e.file, offset, data));
    return data.length;
  },
  spliceToFile(inFd: number, outFd: number, offset: number, count: number): number {
    const f = sockFd(inFd);
    const e = fds.get(outFd);
    if (!e) fail('ebadf');
    if (e.kind !== 'file') fail('einval');
    if ((offset >>> 0) + (count >>> 0) > e.size) fail('efbig');
    if (count === 0) return 0;
    return retry(f, 'readable', () => sockets.recvFile(f.s, e.file, offset, count));
  },
  sendfile(outFd: number, inFd: number, offset: number, count: number): number {
    const f = sockFd(outFd);
    const e = fds.get(inFd);
    if (!e) fail('ebadf');
    if (e.kind !== 'file') fail('einval');
    if (count === 0) return 0;
    return retry(f, 'writable', () => sockets.sendFile(f.s, e.file, offset, count));
  },
};

/** In the stack's `poll`, the handle that stands for the storage completion queue. */
const STORAGE_HANDLE = 65535;
/** Shim tags of commands in flight: which descriptor submitted each, and its own tag. */
const blockTags = new Map<number, [number, number]>();
let nextTag = 1;

/** Take every completion the stack holds and sort it to its descriptor. */
function reapBlocks(): void {
  for (;;) {
    const got = storage.reap(256);
    for (const d of got) {
      const t = d.tag >>> 0;
      const owner = blockTags.get(t);
      if (!owner) continue;
      blockTags.delete(t);
      const f = fds.get(owner[0]);
      if (f && f.kind === 'block') {
        f.inflight--;
        f.done.push({ tag: owner[1], status: d.status });
      }
    }
    if (got.length < 256) return;
  }
}

function blockFd(fd: number): BlockFd {
  const e = fds.get(fd);
  if (!e) fail('ebadf');
  if (e.kind !== 'block') fail('einval');
  return e;
}

interface BlockIo { tag: number; opcode: string; slba: unknown; nlb: number; fua: boolean; memfd: number; offset: number }

export const blockdev = {
  namespaces() {
    return storage.namespaces();
  },
  openNamespace(nsid: number): number {
    const ns = storage.namespaces().find((n) => n.nsid >>> 0 === nsid >>> 0);
    if (!ns) fail('enoent');
    return newFd({ kind: 'block', nsid: nsid >>> 0, done: [], inflight: 0 });
  },
  submit(fd: number, ios: BlockIo[]): void {
    const b = blockFd(fd);
    if (ios.length === 0) return;
    // Check every command before any tag is taken: a bad one refuses the
    // whole batch and leaves nothing behind.
    for (const io of ios) {
      const m = fds.get(io.memfd);
      if ((io.opcode === 'read' || io.opcode === 'write') && (!m || m.kind !== 'file')) fail('ebadf');
    }
    const tags: number[] = [];
    const batch = ios.map((io) => {
      const m = fds.get(io.memfd);
      const moves = io.opcode === 'read' || io.opcode === 'write';
      while (blockTags.has(nextTag)) nextTag = nextTag >= 0x3fffffff ? 1 : nextTag + 1;
      const tag = nextTag;
      nextTag = nextTag >= 0x3fffffff ? 1 : nextTag + 1;
      blockTags.set(tag, [fd, io.tag]);
      tags.push(tag);
      return {
        tag,
        opcode: io.opcode,
        nsid: b.nsid,
        slba: io.slba,
        nlb: io.nlb,
        fua: io.fua,
        file: moves ? (m as FileFd).file : 0,
        offset: moves ? io.offset : 0,
      };
    });
    try {
      storage.submit(batch as never);
    } catch (e) {
      for (const t of tags) blockTags.delete(t);
      fail(code(e) === 'queue-full' ? 'eagain' : 'eio');
    }
    b.inflight += batch.length;
  },
  reap(fd: number, max: number): Completion[] {
    const b = blockFd(fd);
    if (b.done.length === 0) reapBlocks();
    return b.done.splice(0, Math.max(0, max >>> 0));
  },
};

export const epoll = {
  create(): number {
    return newFd({ kind: 'epoll', watched: new Map() });
  },
  ctl(epfd: number, op: 'add' | 'modify' | 'delete', fd: number, events: Events, data: unknown): void {
    const ep = fds.get(epfd);
    if (!ep) fail('ebadf');
    if (ep.kind !== 'epoll' || epfd === fd) fail('einval');
    if (!fds.has(fd)) fail('ebadf');
    if (fds.get(fd)!.kind === 'epoll') fail('einval'); // nested epoll is not offered
    if (op === 'add') {
      if (ep.watched.has(fd)) fail('eexist');
      ep.watched.set(fd, { events, data, armed: true });
    } else if (op === 'modify') {
      if (!ep.watched.has(fd)) fail('enoent');
      ep.watched.set(fd, { events, data, armed: true });
    } else {
      if (!ep.watched.delete(fd)) fail('enoent');
    }
  },
  wait(epfd: number, max: number, timeoutMs: number): { events: Events; data: unknown }[] {
    const ep = fds.get(epfd);
    if (!ep) fail('ebadf');
    if (ep.kind !== 'epoll' || max <= 0) fail('einval');
    const interests = [];
    const byHandle = new Map<number, [number, EpollEntry]>();
    const blocks: [BlockFd, EpollEntry][] = [];
    let blockReady = false;
    for (const [fd, e] of ep.watched) {
      const f = fds.get(fd);
      if (f && f.kind === 'block' && e.armed && e.events.in) {
        blocks.push([f, e]);
        if (f.done.length > 0) blockReady = true;
        continue;
      }
      if (!f || f.kind !== 'socket' || !e.armed) continue;
      interests.push({ socket: f.s, events: { readable: e.events.in, writable: e.events.out, hangup: false, error: false } });
      byHandle.set(f.s, [fd, e]);
    }
    if (blocks.length > 0) interests.push({ socket: STORAGE_HANDLE, events: { ...NONE, readable: true } });
    const deadline = blockReady ? u64(0) : timeoutMs < 0 ? NO_DEADLINE : u64(num(sockets.now()) + timeoutMs * 1e6);
    const ready = net(() => sockets.poll(interests, deadline));
    const out = [];
    if (blocks.length > 0) {
      if (ready.some((r) => r.socket >>> 0 === STORAGE_HANDLE)) reapBlocks();
      for (const [f, e] of blocks) {
        if (f.done.length === 0 || out.length >= max) continue;
        out.push({ events: { in: true, out: false, err: false, hup: false, rdhup: false, et: false, oneshot: false }, data: e.data });
        if (e.events.oneshot) e.armed = false;
      }
    }
    for (const r of ready) {
      const hit = byHandle.get(r.socket);
      if (!hit) continue;
      const [, e] = hit;
      const ev = r.events;
      out.push({
        events: { in: ev.readable, out: ev.writable, err: ev.error, hup: ev.hangup, rdhup: ev.hangup && e.events.rdhup, et: false, oneshot: false },
        data: e.data,
      });
      if (e.events.oneshot) e.armed = false;
      if (out.length >= max) break;
    }
    return out;
  },
};

export const clock = {
  /** The stack's clock: the host's monotonic nanoseconds. */
  monotonicNow() {
    return sockets.now();
  },
};
