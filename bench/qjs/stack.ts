// Two TCP/IP stacks on the test harness's wire in QuickJS: one request of
// 28 bytes and a reply of 16 at a time (each a segment of its own), and the
// process CPU per request, both stacks and the harness together. With the
// receive fast path on and off, to price it (components/tcp-stack).
import { pair, B_IP } from '../../components/tcp-stack/test/harness.ts';
import type { TcpConnection } from '../../components/tcp-stack/src/socket/tcp.ts';

declare const cpuNow: () => number;

function once(n: number, fast: boolean): number {
  const REQ = 28;
  const REP = 16;
  const { wire, a, b } = pair({ seed: 1 }, (c) => (c.fastPath = fast));
  const l = b.stack.tcpListen(10809, 16) as Parameters<typeof b.stack.accept>[0];
  let server: TcpConnection | null = null;
  const reply = new Uint8Array(REP);
  let served = 0;
  b.app = (node) => {
    if (!server) server = node.stack.accept(l);
    if (!server) return;
    while (server.readable() >= REQ) {
      server.read(REQ);
      server.write(reply);
      served++;
    }
  };
  const c = a.stack.tcpConnect(B_IP, 10809) as TcpConnection;
  let sent = 0;
  let got = 0;
  const req = new Uint8Array(REQ);
  a.app = () => {
    if (c.state !== 'ESTABLISHED') return;
    got += c.read(1 << 20).length;
    if (sent < n && sent === got / REP) {
      c.write(req);
      sent++;
    }
  };
  wire.run(5e9, () => served >= 10);
  const s0 = served;
  const t0 = cpuNow();
  wire.run(wire.now + 600e9, () => got >= n * REP);
  return (cpuNow() - t0) / (served - s0);
}

export function run(n: number): string {
  const count = n || 3000;
  once(200, true); // warm up
  const best = { on: Infinity, off: Infinity };
  for (let round = 0; round < 4; round++) {
    best.on = Math.min(best.on, once(count, true));
    best.off = Math.min(best.off, once(count, false));
  }
  return [
    `fast path on:  ${best.on.toFixed(1)} us CPU per request and reply (both stacks and the harness; best of 4)`,
    `fast path off: ${best.off.toFixed(1)} us`,
  ].join('\n');
}
