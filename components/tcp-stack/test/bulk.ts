/**
 * Bulk transfer between two stacks on a harness wire: each side sends
 * `bytes` of a seeded pattern and checks, byte for byte, what it receives.
 */
import { pair, B_IP, rng, type Wire, type WireOptions } from './harness.ts';
import type { TcpConnection } from '../src/socket/tcp.ts';
import type { StackConfig, TcpListener } from '../src/stack.ts';

export function pattern(seed: number, len: number): Uint8Array {
  const r = rng(seed);
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i += 4) {
    const x = Math.floor(r() * 4294967296);
    b[i] = x & 0xff;
    b[i + 1] = (x >>> 8) & 0xff;
    b[i + 2] = (x >>> 16) & 0xff;
    b[i + 3] = x >>> 24;
  }
  return b;
}

export interface BulkResult {
  ok: boolean;
  why: string;
  simulatedMs: number;
  aToB: number;
  bToA: number;
  wire: { delivered: number; dropped: number; duplicated: number; reordered: number };
  counters: Record<string, number>;
  /** Segments that took the receive fast path, both stacks. */
  rxFast: number;
}

export function bulk(opts: WireOptions, bytes: number, tune: (c: StackConfig) => void = () => {}, limitNs = 600e9, observe: (w: Wire) => void = () => {}): BulkResult {
  const { wire, a, b } = pair(opts, tune);
  observe(wire);
  const toB = pattern(opts.seed * 7 + 1, bytes);
  const toA = pattern(opts.seed * 7 + 2, bytes);
  const l = b.stack.tcpListen(5001, 8) as TcpListener;
  let server: TcpConnection | null = null;
  let bSent = 0;
  let bGot = 0;
  let aSent = 0;
  let aGot = 0;
  let why = '';
  const sendSome = (c: TcpConnection, data: Uint8Array, sent: number): number => {
    while (sent < data.length) {
      const n = c.write(data.subarray(sent, Math.min(data.length, sent + (256 << 10))));
      if (n === 0) break;
      sent += n;
    }
    return sent;
  };
  const check = (c: TcpConnection, want: Uint8Array, got: number, who: string): number => {
    for (;;) {
      const d = c.read(1 << 20);
      if (d.length === 0) break;
      for (let i = 0; i < d.length; i++) {
        if (d[i] !== want[got + i]) {
          why ||= `${who}: byte ${got + i} is ${d[i]}, expected ${want[got + i]}`;
          break;
        }
      }
      got += d.length;
    }
    return got;
  };
  b.app = (n) => {
    if (!server) server = n.stack.accept(l);
    if (!server) return;
    bSent = sendSome(server, toA, bSent);
    bGot = check(server, toB, bGot, 'b');
    if (bSent === bytes && server.state === 'ESTABLISHED' && bGot === bytes) n.stack.close(server);
    else if (bSent === bytes && server.state === 'CLOSE-WAIT') n.stack.close(server);
  };
  const c = a.stack.tcpConnect(B_IP, 5001) as TcpConnection;
  a.app = (n) => {
    aSent = sendSome(c, toB, aSent);
    aGot = check(c, toA, aGot, 'a');
    if (aSent === bytes && aGot === bytes && (c.state === 'ESTABLISHED' || c.state === 'CLOSE-WAIT')) n.stack.close(c);
  };
  const done = (x: TcpConnection | null) => !!x && (x.state === 'TIME-WAIT' || x.state === 'CLOSED');
  wire.run(limitNs, () => !!why || (aGot === bytes && bGot === bytes && done(c) && done(server)));
  const counters: Record<string, number> = {};
  for (const [k, v] of a.stack.counters) counters[`a.${k}`] = v;
  for (const [k, v] of b.stack.counters) counters[`b.${k}`] = v;
  if (!why && (aGot !== bytes || bGot !== bytes)) why = `incomplete: a got ${aGot}, b got ${bGot} of ${bytes}; a ${c.describe()}; b ${server ? (server as TcpConnection).describe() : 'no connection'}`;
  if (!why && c.error) why = `a: ${c.error}`;
  return {
    ok: !why,
    why,
    simulatedMs: wire.now / 1e6,
    aToB: bGot,
    bToA: aGot,
    wire: { delivered: wire.delivered, dropped: wire.dropped, duplicated: wire.duplicated, reordered: wire.reordered },
    counters,
    rxFast: a.stack.rxFast + b.stack.rxFast,
  };
}
