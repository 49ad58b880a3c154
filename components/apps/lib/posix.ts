/**
 * Helpers for apps written against the POSIX shim: errno from a thrown
 * error, a listening socket, and an epoll event loop in the shape of a C
 * server's (nginx, redis and memcached all run one).
 */
import * as epoll from 'libretto:posix/epoll@0.1.0';
import * as io from 'libretto:posix/io@0.1.0';
import * as socket from 'libretto:posix/socket@0.1.0';
import * as host from 'libretto:io/host@0.1.0';
import * as clock from 'libretto:posix/clock@0.1.0';
import { u64, num } from '../../lib/abi.ts';

/** The errno name a failed call threw, or null if it was not an errno. */
export function errno(e: unknown): string | null {
  const p = (e as { payload?: unknown })?.payload ?? e;
  return typeof p === 'string' ? p : null;
}

/** Milliseconds on the monotonic clock (clock_gettime(CLOCK_MONOTONIC)). */
export function nowMs(): number {
  return num(clock.monotonicNow() as bigint | number) / 1e6;
}

export function isAgain(e: unknown): boolean {
  return errno(e) === 'eagain';
}

/** socket(); setsockopt(SO_REUSEADDR); bind(); listen(); O_NONBLOCK. */
export function listenTcp(port: number, backlog = 511): number {
  const fd = socket.socket('sock-stream');
  socket.setsockopt(fd, 'so-reuseaddr', 1);
  socket.bind(fd, { addr: [0, 0, 0, 0], port });
  socket.listen(fd, backlog);
  io.setNonblocking(fd, true);
  return fd;
}

export const EV_IN = { in: true, out: false, err: false, hup: false, rdhup: true, et: false, oneshot: false };
export const EV_INOUT = { ...EV_IN, out: true };

export interface Handler {
  /** The listening socket has connections to accept. */
  onAccept?(fd: number): void;
  /** A connection is readable (or hung up). */
  onReadable?(fd: number): void;
  /** A connection can take more output. */
  onWritable?(fd: number): void;
  /** Before each batch of events is handled, and after each idle wait (at least once a second). */
  beforeEvents?(): void;
  /** After each batch of events, and after each idle wait: the place to submit work gathered from them in one call. */
  afterEvents?(): void;
}

export class EventLoop {
  readonly ep = epoll.create();
  private listeners = new Set<number>();
  private tokens = new Map<number, number>();
  /** Descriptors managed by `interest`: bit 1 in, bit 2 out. */
  private interests = new Map<number, number>();

  listen(fd: number): void {
    this.listeners.add(fd);
    epoll.ctl(this.ep, 'add', fd, EV_IN, u64(fd));
  }

  watch(fd: number, wantOut = false): void {
    epoll.ctl(this.ep, 'add', fd, wantOut ? EV_INOUT : EV_IN, u64(fd));
  }

  want(fd: number, out: boolean): void {
    epoll.ctl(this.ep, 'modify', fd, out ? EV_INOUT : EV_IN, u64(fd));
  }

  /**
   * Watch exactly these events on `fd`, adding it, changing it or (for
   * neither) taking it out of the epoll set, so a descriptor the app is
   * not ready to serve cannot wake it (a hang-up is reported whatever
   * the interest). Only for descriptors not passed to `watch`.
   */
  interest(fd: number, wantIn: boolean, wantOut: boolean): void {
    const now = (wantIn ? 1 : 0) | (wantOut ? 2 : 0);
    const was = this.interests.get(fd) ?? 0;
    if (now === was) return;
    if (now === 0) {
      epoll.ctl(this.ep, 'delete', fd, EV_IN, u64(fd));
      this.interests.delete(fd);
      return;
    }
    epoll.ctl(this.ep, was === 0 ? 'add' : 'modify', fd, { ...EV_IN, in: wantIn, rdhup: wantIn, out: wantOut }, u64(fd));
    this.interests.set(fd, now);
  }

  close(fd: number): void {
    this.interests.delete(fd);
    try {
      io.close(fd);
    } catch {
      // already gone
    }
  }

  /** Run until the host asks the app to stop. */
  run(h: Handler): void {
    for (let turn = 1; ; turn++) {
      const events = epoll.wait(this.ep, 256, 1000);
      // Ask whether to stop when idle, and every 1024 turns under load.
      if ((events.length === 0 || (turn & 1023) === 0) && host.stopping()) return;
      h.beforeEvents?.();
      if (events.length === 0) {
        h.afterEvents?.();
        continue;
      }
      for (const e of events) {
        const fd = num(e.data as bigint | number);
        if (this.listeners.has(fd)) h.onAccept?.(fd);
        else {
          if (e.events.in || e.events.hup || e.events.err) h.onReadable?.(fd);
          if (e.events.out) h.onWritable?.(fd);
        }
      }
      h.afterEvents?.();
    }
  }
}

export { io, socket, host };
