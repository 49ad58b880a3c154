/**
 * The stack's ties to the host inside a component: byte stores backed by
 * host byte queues, the portmap import, the host's randomness, and the
 * link loop that flushes the stack's output.
 */
import { ByteQueue } from 'libretto:io/buffers@0.1.0';
import * as host from 'libretto:io/host@0.1.0';
import * as portmap from 'libretto:net/portmap@0.1.0';
import { num, u32, u64 } from '../../../lib/abi.ts';
import * as link from '../../../lib/link.ts';
import type { Placements } from '../../../lib/linkcodec.ts';
import type { ByteStore } from '../storage.ts';
import { Stack, type BindResult, type Platform } from '../stack.ts';

/** A byte store in host memory. */
export class HostStore implements ByteStore {
  readonly queue: ByteQueue;
  /** Local mirrors of the queue's head and tail (every change goes through here). */
  head = 0;
  tail = 0;
  constructor(readonly capacity: number) {
    this.queue = new ByteQueue(u32(capacity));
  }
  get handle(): object {
    return this.queue;
  }
  append(data: Uint8Array): number {
    const n = this.queue.append(data) >>> 0;
    this.tail += n;
    return n;
  }
  splice(src: ByteStore, len: number): number {
    const s = src as HostStore;
    const n = this.queue.splice(s.queue, u32(len)) >>> 0;
    this.tail += n;
    s.head += n;
    return n;
  }
  read(max: number): Uint8Array {
    const out = this.queue.read(u32(max));
    this.head += out.length;
    return out;
  }
  peek(at: number, len: number): Uint8Array {
    return this.queue.peek(u64(at), u32(len));
  }
  writeAt(at: number, data: Uint8Array): void {
    this.queue.writeAt(u64(at), data);
  }
  advanceTail(to: number): void {
    this.queue.advanceTail(u64(to));
    this.tail = to;
  }
  release(to: number): void {
    this.queue.release(u64(to));
    this.head = to;
  }
  /** Drop everything held (a sink). */
  releaseAll(): void {
    if (this.tail > this.head) this.release(this.tail);
  }
  /** Move up to `max` bytes from the head into a host buffer at `offset`. */
  readInto(dst: unknown, offset: number, max: number): number {
    const n = this.queue.readInto(dst as never, u32(offset), u32(max)) >>> 0;
    this.head += n;
    return n;
  }
  /** Append up to `len` bytes of a host buffer from `offset`. */
  appendBuffer(src: unknown, offset: number, len: number): number {
    const n = this.queue.appendBuffer(src as never, u32(offset), u32(len)) >>> 0;
    this.tail += n;
    return n;
  }
  /** Append up to `len` bytes of the host's pattern stream `seed`. */
  fill(seed: number, len: number): number {
    const n = this.queue.fill(u64(seed), u32(len)) >>> 0;
    this.tail += n;
    return n;
  }
  trackDigest(): void {
    this.queue.trackDigest();
  }
  /** The running SHA-256 (hex) and how many bytes it covers. */
  digest(): { hex: string; bytes: number } {
    const [d, n] = this.queue.digest();
    return { hex: Array.from(d, (x) => x.toString(16).padStart(2, '0')).join(''), bytes: num(n) };
  }
}

function bindResult(e: unknown): BindResult {
  const payload = (e as { payload?: unknown })?.payload ?? e;
  return payload === 'in-use' || payload === 'forbidden' || payload === 'exhausted' || payload === 'invalid' ? payload : 'invalid';
}

export const hostPlatform: Platform = {
  newStore: (capacity) => new HostStore(capacity),
  bind(proto, port) {
    try {
      portmap.bind(proto, port);
      return 'ok';
    } catch (e) {
      return bindResult(e);
    }
  },
  bindEphemeral(proto) {
    try {
      return portmap.bindEphemeral(proto);
    } catch (e) {
      return bindResult(e);
    }
  },
  unbind(proto, port) {
    portmap.unbind(proto, port);
  },
  random32() {
    const b = host.random(4);
    return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
  },
};

export function log(line: string): void {
  host.log(line);
}

export function args(): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const [k, v] of host.args()) m.set(k, [...(m.get(k) ?? []), v]);
  return m;
}

function flushPlacements(p: Placements): void {
  if (p.count) {
    link.place(p);
    p.reset();
  }
}

/**
 * One turn of the link: receive a batch, place payload, make it readable,
 * run `app`, run timers, send, release. Returns how many frames came in.
 */
export function linkTurn(stack: Stack, maxBatch: number, ids: number[], app: () => void): number {
  const out = stack.out;
  stack.setTime(link.now());
  const cur = link.recvCursor(maxBatch);
  ids.length = 0;
  while (cur.next()) {
    ids.push(cur.id);
    stack.receive({ id: cur.id, len: cur.len, flags: cur.flags, gso: cur.gso, head: cur.head() });
  }
  flushPlacements(out.placements);
  stack.commitTails();
  app();
  stack.poll();
  flushPlacements(out.placements);
  stack.commitTails();
  if (out.tx.count) link.send(out.tx);
  stack.releaseAcked();
  if (ids.length) link.release(ids);
  out.reset();
  return ids.length;
}

/**
 * Drive a stack on the component's link until the host asks it to stop or
 * `app` returns true (done). Each turn: receive a batch, place payload,
 * make it readable, run the application, run timers, send, release.
 */
/** Time spent per phase of the link loop, when profiling (arg profile=1). */
export const profile = { on: false, turns: 0, frames: 0, recv: 0, receive: 0, place: 0, app: 0, poll: 0, send: 0, release: 0, wait: 0 };

export function runLink(stack: Stack, app: () => boolean): 'stopped' | 'done' {
  if (profile.on) return runLinkProfiled(stack, app);
  const info = link.info();
  const out = stack.out;
  const ids: number[] = [];
  for (;;) {
    stack.setTime(link.now());
    const cur = link.recvCursor(info.maxBatch);
    ids.length = 0;
    while (cur.next()) {
      ids.push(cur.id);
      stack.receive({ id: cur.id, len: cur.len, flags: cur.flags, gso: cur.gso, head: cur.head() });
    }
    flushPlacements(out.placements);
    stack.commitTails();
    const done = app();
    stack.poll();
    flushPlacements(out.placements);
    stack.commitTails();
    if (out.tx.count) link.send(out.tx);
    stack.releaseAcked();
    if (ids.length) link.release(ids);
    out.reset();
    if (done) return 'done';
    if (ids.length === 0) {
      const now = link.now();
      const deadline = Math.min(stack.nextDeadline(), now + 1e9);
      if (link.wait(Math.max(deadline, now)) === 'stop') return 'stopped';
    }
  }
}

function runLinkProfiled(stack: Stack, app: () => boolean): 'stopped' | 'done' {
  const info = link.info();
  const out = stack.out;
  const ids: number[] = [];
  const p = profile;
  for (;;) {
    let t = link.now();
    stack.setTime(t);
    const cur = link.recvCursor(info.maxBatch);
    let t2 = link.now();
    p.recv += t2 - t;
    t = t2;
    ids.length = 0;
    while (cur.next()) {
      ids.push(cur.id);
      stack.receive({ id: cur.id, len: cur.len, flags: cur.flags, gso: cur.gso, head: cur.head() });
    }
    t2 = link.now();
    p.receive += t2 - t;
    t = t2;
    flushPlacements(out.placements);
    stack.commitTails();
    t2 = link.now();
    p.place += t2 - t;
    t = t2;
    const done = app();
    t2 = link.now();
    p.app += t2 - t;
    t = t2;
    stack.poll();
    flushPlacements(out.placements);
    stack.commitTails();
    t2 = link.now();
    p.poll += t2 - t;
    t = t2;
    if (out.tx.count) link.send(out.tx);
    t2 = link.now();
    p.send += t2 - t;
    t = t2;
    stack.releaseAcked();
    if (ids.length) link.release(ids);
    out.reset();
    t2 = link.now();
    p.release += t2 - t;
    t = t2;
    p.turns++;
    p.frames += ids.length;
    if (done) return 'done';
    if (ids.length === 0) {
      const now = link.now();
      const deadline = Math.min(stack.nextDeadline(), now + 1e9);
      const w = link.wait(Math.max(deadline, now));
      p.wait += link.now() - now;
      if (w === 'stop') return 'stopped';
    }
    if (p.turns % 5000 === 0) {
      const f = (x: number) => (x / Math.max(1, p.frames) / 1000).toFixed(2);
      log(`profile: ${p.turns} turns, ${p.frames} frames; us per frame: recv ${f(p.recv)} receive ${f(p.receive)} place ${f(p.place)} app ${f(p.app)} poll ${f(p.poll)} send ${f(p.send)} release ${f(p.release)} wait ${f(p.wait)}`);
    }
  }
}
