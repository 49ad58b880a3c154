// The TypeScript network server's forwarding logic in QuickJS: batches of
// 64 TCP frames from the NIC to an app on the shared IP, and from the app
// out, through the component's batch parser and the Forwarder
// (components/network-server), with the portmap answered in JavaScript.
// CPU per frame, the logic alone: no crossings, no rings.
import { Decisions, Forwarder, parseBatch as parse, type InFrame } from '../../components/network-server/src/forward.ts';

declare const cpuNow: () => number;

const RX_DESC = 24;
const SHARED = 0x0a3f0002;
const NIC_MAC = 0x020000003f01;
const APP_MAC = 0x020000003f02;
const PEER = 0x0a3f0001;
const PEER_MAC = 0x020000003f09;

function frame(fromNic: boolean): Uint8Array {
  const b = new Uint8Array(64);
  const put = (at: number, v: number, n: number) => {
    for (let i = n - 1; i >= 0; i--) {
      b[at + i] = v % 256;
      v = Math.floor(v / 256);
    }
  };
  put(0, fromNic ? NIC_MAC : PEER_MAC, 6);
  put(6, fromNic ? PEER_MAC : APP_MAC, 6);
  put(12, 0x0800, 2);
  b[14] = 0x45;
  put(16, 50, 2);
  b[22] = 64;
  b[23] = 6;
  put(26, fromNic ? PEER : SHARED, 4);
  put(30, fromNic ? SHARED : PEER, 4);
  put(34, fromNic ? 40000 : 80, 2);
  put(36, fromNic ? 80 : 40000, 2);
  b[46] = 0x50;
  b[47] = 0x10;
  return b;
}

function batchOf(n: number, fromNic: boolean): Uint8Array {
  const f = frame(fromNic);
  const out = new Uint8Array(n * (RX_DESC + f.length));
  const dv = new DataView(out.buffer);
  for (let i = 0; i < n; i++) {
    const at = i * (RX_DESC + f.length);
    dv.setUint32(at, fromNic ? 0 : 1, true);
    dv.setUint32(at + 4, i, true);
    dv.setUint32(at + 8, f.length, true);
    dv.setUint16(at + 22, f.length, true);
    out.set(f, at + RX_DESC);
  }
  return out;
}

export function run(n: number): string {
  const fw = new Forwarder({ nicMac: NIC_MAC, sharedIp: SHARED, prefixLen: 24 });
  fw.setPorts([
    { port: 0, name: 'nic', mac: NIC_MAC, ip: null },
    { port: 1, name: 'app', mac: APP_MAC, ip: null },
  ]);
  const lookup = (keys: { proto: string; port: number }[]) => keys.map((k) => (k.port === 80 ? 1 : undefined));
  const d = new Decisions();
  const frames: InFrame[] = [];
  const lines: string[] = [];
  const batches = n || 300;
  for (const fromNic of [true, false]) {
    const batch = batchOf(64, fromNic);
    let parseOnly = Infinity;
    let whole = Infinity;
    for (let round = 0; round < 3; round++) {
      let t = cpuNow();
      for (let i = 0; i < batches; i++) parse(batch, frames);
      parseOnly = Math.min(parseOnly, (cpuNow() - t) / (batches * 64));
      t = cpuNow();
      for (let i = 0; i < batches; i++) {
        parse(batch, frames);
        d.reset();
        fw.decide(frames, lookup, d);
      }
      whole = Math.min(whole, (cpuNow() - t) / (batches * 64));
    }
    lines.push(`${fromNic ? 'NIC -> app' : 'app -> NIC'}, batches of 64: ${whole.toFixed(2)} us per frame, of which parsing the batch ${parseOnly.toFixed(2)} us`);
  }
  return lines.join('\n');
}
