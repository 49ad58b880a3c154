/**
 * A harness for stacks in Node: each `Node` is a Stack with JavaScript byte
 * stores, and a `Wire` joins nodes with seeded loss, duplication,
 * reordering and delay. It flushes each stack's output the way the
 * component does with the host: placements, then tails, then the
 * application, then timers, then transmit, then release.
 *
 * Frames on the wire are real bytes; the harness fills in the checksums
 * the link would (so parsers see what a peer would send) and cuts TSO
 * segments into MTU-sized ones when the wire is lossy, as the host does.
 */
import { MemoryStore } from '../src/storage.ts';
import { defaultConfig, Stack, type Platform, type StackConfig, type BindResult } from '../src/stack.ts';
import { parsePlacements, parseTx } from '../../lib/linkcodec.ts';
import { checksum, fold, sumWords } from '../src/wire/checksum.ts';

/** A small, fast, seeded PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class FakePortmap {
  readonly owner = new Map<string, string>();
  next = 49152;
  bindFor(node: string, proto: string, port: number): BindResult {
    if (port === 0) return 'invalid';
    const k = `${proto}:${port}`;
    const o = this.owner.get(k);
    if (o && o !== node) return 'in-use';
    this.owner.set(k, node);
    return 'ok';
  }
}

export interface WireOptions {
  seed: number;
  loss?: number;
  duplicate?: number;
  reorder?: number;
  /** One-way delay in ns. */
  delayNs?: number;
  /** Extra delay for reordered frames, ns. */
  reorderNs?: number;
}

interface InFlight {
  at: number;
  to: Node;
  bytes: Uint8Array;
  flags: number;
}

export class Node {
  readonly stack: Stack;
  /** Held frames by id (the host's pool). */
  readonly frames = new Map<number, Uint8Array>();
  private nextId = 0x8000_0000;
  inbox: { bytes: Uint8Array; flags: number }[] = [];
  sent: Uint8Array[] = [];
  /** Application logic run after each step's receive processing. */
  app: (n: Node) => void = () => {};

  constructor(
    readonly name: string,
    cfg: StackConfig,
    portmap: FakePortmap,
    seed: number,
  ) {
    const r = rng(seed);
    const platform: Platform = {
      newStore: (cap) => new MemoryStore(cap),
      bind: (proto, port) => portmap.bindFor(name, proto, port),
      bindEphemeral: (proto) => {
        for (let i = 0; i < 16384; i++) {
          const p = 49152 + ((portmap.next++ - 49152) % 16384);
          if (portmap.bindFor(name, proto, p) === 'ok') return p;
        }
        return 'exhausted';
      },
      unbind: (proto, port) => {
        if (portmap.owner.get(`${proto}:${port}`) === name) portmap.owner.delete(`${proto}:${port}`);
      },
      random32: () => Math.floor(r() * 4294967296) >>> 0,
    };
    this.stack = new Stack(cfg, platform);
  }

  /** One step at time `now`: receive the inbox, run the app and timers, return frames to send. */
  step(now: number): Uint8Array[] {
    const s = this.stack;
    s.setTime(now);
    const ids: number[] = [];
    for (const f of this.inbox) {
      const id = this.nextId++ >>> 0;
      this.frames.set(id, f.bytes);
      ids.push(id);
      s.receive({ id, len: f.bytes.length, flags: f.flags, gso: 0, head: f.bytes.subarray(0, 128) });
    }
    this.inbox = [];
    this.flushPlacements();
    s.commitTails();
    this.app(this);
    s.poll();
    this.flushPlacements();
    s.commitTails();
    const out = this.flushTx();
    s.releaseAcked();
    for (const id of ids) this.frames.delete(id);
    s.out.reset();
    return out;
  }

  private flushPlacements(): void {
    const p = this.stack.out.placements;
    for (const pl of parsePlacements(p.bytes())) {
      const frame = this.frames.get(pl.frame);
      if (!frame) throw new Error(`placement names frame ${pl.frame}, not held`);
      const store = p.queues[pl.queueIndex] as MemoryStore;
      store.writeAt(pl.at, frame.subarray(pl.offset, pl.offset + pl.len));
    }
    p.reset();
  }

  private flushTx(): Uint8Array[] {
    const tx = this.stack.out.tx;
    const frames: Uint8Array[] = [];
    for (const d of parseTx(tx.bytes())) {
      const parts = [d.head];
      for (const c of d.chunks) {
        if ('queueIndex' in c) parts.push((tx.queues[c.queueIndex] as MemoryStore).peek(c.offset, c.len));
        else {
          const f = this.frames.get(c.frame);
          if (!f) throw new Error(`chunk names frame ${c.frame}, not held`);
          parts.push(f.subarray(c.offset, c.offset + c.len));
        }
      }
      const len = parts.reduce((n, p) => n + p.length, 0);
      const b = new Uint8Array(len);
      let at = 0;
      for (const p of parts) {
        b.set(p, at);
        at += p.length;
      }
      if (d.offload.needsCsum) {
        // Finish the L4 checksum as the link would.
        const start = d.offload.csumStart;
        const field = start + d.offload.csumOffset;
        const sum = ~fold(sumWords(b, start, b.length)) & 0xffff;
        b[field] = sum >>> 8;
        b[field + 1] = sum & 0xff;
      }
      if (d.offload.gso === 'tcpv4') frames.push(...segmentTcp(b, d.offload.gsoSize));
      else frames.push(b);
    }
    this.sent.push(...frames);
    return frames;
  }
}

/** Cut a TSO frame into MSS-sized TCP/IPv4 segments with fixed headers and checksums. */
export function segmentTcp(b: Uint8Array, mss: number): Uint8Array[] {
  const ipAt = 14;
  const ihl = (b[ipAt] & 0xf) * 4;
  const tcpAt = ipAt + ihl;
  const thl = (b[tcpAt + 12] >> 4) * 4;
  const hdr = tcpAt + thl;
  const payload = b.length - hdr;
  if (payload <= mss) return [b];
  const out: Uint8Array[] = [];
  const seq0 = ((b[tcpAt + 4] << 24) | (b[tcpAt + 5] << 16) | (b[tcpAt + 6] << 8) | b[tcpAt + 7]) >>> 0;
  const flags = b[tcpAt + 13];
  const ident0 = (b[ipAt + 4] << 8) | b[ipAt + 5];
  for (let off = 0, i = 0; off < payload; off += mss, i++) {
    const n = Math.min(mss, payload - off);
    const s = new Uint8Array(hdr + n);
    s.set(b.subarray(0, hdr));
    s.set(b.subarray(hdr + off, hdr + off + n), hdr);
    const total = ihl + thl + n;
    s[ipAt + 2] = total >>> 8;
    s[ipAt + 3] = total & 0xff;
    const ident = (ident0 + i) & 0xffff;
    s[ipAt + 4] = ident >>> 8;
    s[ipAt + 5] = ident & 0xff;
    s[ipAt + 10] = 0;
    s[ipAt + 11] = 0;
    const ic = checksum(s, ipAt, ipAt + ihl);
    s[ipAt + 10] = ic >>> 8;
    s[ipAt + 11] = ic & 0xff;
    const seq = (seq0 + off) >>> 0;
    s[tcpAt + 4] = seq >>> 24;
    s[tcpAt + 5] = (seq >>> 16) & 0xff;
    s[tcpAt + 6] = (seq >>> 8) & 0xff;
    s[tcpAt + 7] = seq & 0xff;
    const last = off + n >= payload;
    // FIN and PSH only on the last segment, CWR only on the first.
    s[tcpAt + 13] = last ? flags : flags & ~(0x01 | 0x08) & (i === 0 ? 0xff : ~0x80);
    // Recompute the checksum: pseudo header + TCP header and data.
    s[tcpAt + 16] = 0;
    s[tcpAt + 17] = 0;
    const src = ((s[ipAt + 12] << 24) | (s[ipAt + 13] << 16) | (s[ipAt + 14] << 8) | s[ipAt + 15]) >>> 0;
    const dst = ((s[ipAt + 16] << 24) | (s[ipAt + 17] << 16) | (s[ipAt + 18] << 8) | s[ipAt + 19]) >>> 0;
    const l4 = thl + n;
    const pseudo = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + 6 + l4;
    const c = ~fold(sumWords(s, tcpAt, s.length, pseudo)) & 0xffff;
    s[tcpAt + 16] = c >>> 8;
    s[tcpAt + 17] = c & 0xff;
    out.push(s);
  }
  return out;
}

/** Two or more nodes on one wire, stepped in simulated time. */
export class Wire {
  readonly nodes: Node[] = [];
  private inFlight: InFlight[] = [];
  private readonly r: () => number;
  now = 0;
  delivered = 0;
  dropped = 0;
  duplicated = 0;
  reordered = 0;
  /** Taps see every frame put on the wire, with its sender. */
  taps: ((from: Node, bytes: Uint8Array) => void)[] = [];
  /** A filter may drop a frame (return false) before the loss model. */
  filter: (from: Node, bytes: Uint8Array) => boolean = () => true;

  constructor(readonly opts: WireOptions) {
    this.r = rng(opts.seed ^ 0x9e3779b9);
  }

  add(n: Node): Node {
    this.nodes.push(n);
    return n;
  }

  private put(from: Node, bytes: Uint8Array): void {
    for (const t of this.taps) t(from, bytes);
    if (!this.filter(from, bytes)) return;
    const o = this.opts;
    if (o.loss && this.r() < o.loss) {
      this.dropped++;
      return;
    }
    const copies = o.duplicate && this.r() < o.duplicate ? 2 : 1;
    if (copies === 2) this.duplicated++;
    for (let i = 0; i < copies; i++) {
      let at = this.now + (o.delayNs ?? 50_000);
      if (o.reorder && this.r() < o.reorder) {
        at += o.reorderNs ?? 300_000;
        this.reordered++;
      }
      for (const to of this.nodes) if (to !== from) this.inFlight.push({ at, to, bytes, flags: 1 });
    }
  }

  /** Advance to `until` (ns), stepping nodes at frame arrivals and timer deadlines. */
  run(until: number, stop: () => boolean = () => false, maxSteps = 10_000_000): void {
    for (let steps = 0; steps < maxSteps; steps++) {
      if (stop()) return;
      // Step everyone at the current time.
      for (const n of this.nodes) for (const f of n.step(this.now)) this.put(n, f);
      // Deliver what is due.
      let next = until;
      for (const n of this.nodes) next = Math.min(next, n.stack.nextDeadline());
      for (const f of this.inFlight) next = Math.min(next, f.at);
      if (next <= this.now) next = this.now + 1000;
      if (next > until) {
        this.now = until;
        return;
      }
      this.now = next;
      const due = this.inFlight.filter((f) => f.at <= this.now);
      this.inFlight = this.inFlight.filter((f) => f.at > this.now);
      for (const f of due) {
        f.to.inbox.push({ bytes: f.bytes, flags: f.flags });
        this.delivered++;
      }
    }
    throw new Error(`wire: no end after ${maxSteps} steps (now ${this.now})`);
  }
}

export const A_MAC = 0x0200_0000_000a;
export const B_MAC = 0x0200_0000_000b;
export const A_IP = 0x0a00_0001; // 10.0.0.1
export const B_IP = 0x0a00_0002; // 10.0.0.2

/** Two stacks on a wire, 10.0.0.1 and 10.0.0.2. */
export function pair(opts: WireOptions, tune: (c: StackConfig) => void = () => {}): { wire: Wire; a: Node; b: Node } {
  const wire = new Wire(opts);
  const ca = defaultConfig(A_MAC, A_IP);
  const cb = defaultConfig(B_MAC, B_IP);
  tune(ca);
  tune(cb);
  const a = wire.add(new Node('a', ca, new FakePortmap(), opts.seed * 2 + 1));
  const b = wire.add(new Node('b', cb, new FakePortmap(), opts.seed * 2 + 2));
  return { wire, a, b };
}
