// What single JavaScript operations cost in QuickJS: the unit prices
// behind the stack's and the servers' per-frame costs.
import { parseEthernet } from '../../components/tcp-stack/src/wire/ethernet.ts';
import { parseIpv4 } from '../../components/tcp-stack/src/wire/ipv4.ts';
import { parseTcp } from '../../components/tcp-stack/src/wire/tcp.ts';

declare const cpuNow: () => number;

class Plain {
  constructor(readonly payload: string) {}
}
class Failure extends Error {
  constructor(readonly payload: string) {
    super(payload);
  }
}

function price(n: number, f: () => unknown): number {
  const t = cpuNow();
  for (let i = 0; i < n; i++) f();
  return (cpuNow() - t) / n;
}

export function run(rounds: number): string {
  // Ethernet + IPv4 + TCP with NOP NOP timestamp, 28 bytes of payload.
  const b = new Uint8Array(94);
  b.set([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0]);
  b.set([0x45, 0, 0, 80, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2], 14);
  let s = 0;
  for (let i = 14; i < 34; i += 2) s += (b[i] << 8) | b[i + 1];
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  s = ~s & 0xffff;
  b[24] = s >> 8;
  b[25] = s & 0xff;
  b.set([0x1f, 0x90, 0x2a, 0x39, 0, 0, 0, 1, 0, 0, 0, 1, 0x80, 0x18, 0x01, 0xf5, 0, 0, 0, 0, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], 34);
  const m = new Map<string, number>();
  const o = { a: 0 };
  const cases: [string, () => unknown][] = [
    ['a call of an empty closure', () => 0],
    ['a property increment', () => o.a++],
    ['a Map update under a string key', () => m.set('tcp.rx-segments', (m.get('tcp.rx-segments') ?? 0) + 1)],
    ['an object of 9 fields', () => ({ a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9 })],
    ['a subarray', () => b.subarray(1, 50)],
    ['a key string from three numbers', () => `${0x0a000001}:${10809}:${49152}`],
    ['throw and catch an object', () => { try { throw new Plain('would-block'); } catch (e) { return e; } }],
    ['throw and catch an Error (a backtrace is made)', () => { try { throw new Failure('would-block'); } catch (e) { return e; } }],
    ['parse an Ethernet header', () => parseEthernet(b)],
    ['parse an IPv4 header (checksum included)', () => parseIpv4(b, 14, 80)],
    ['parse a TCP header with a timestamp', () => parseTcp(b, 34, 60)],
  ];
  const n = 20_000;
  const best = new Map<string, number>();
  for (let r = 0; r < Math.max(rounds, 3); r++) {
    for (const [what, f] of cases) best.set(what, Math.min(best.get(what) ?? Infinity, price(n, f)));
  }
  return cases.map(([what]) => `${best.get(what)!.toFixed(3).padStart(8)} us  ${what}`).join('\n');
}
