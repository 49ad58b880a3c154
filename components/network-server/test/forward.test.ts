import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Decisions, Forwarder, NIC_PORT } from '../src/forward.ts';

const SHARED = (10 << 24) | (1 << 16) | 2; // 10.1.0.2
const OWN = (10 << 24) | (1 << 16) | 3; // 10.1.0.3, an app with an IP of its own
const NIC_MAC = 0x020000000001;
const APP_MAC = 0x020000000003;

function mac(b: Uint8Array, at: number, m: number): void {
  for (let i = 0; i < 6; i++) b[at + i] = Math.floor(m / 2 ** (8 * (5 - i))) & 0xff;
}

/** A TCP SYN from `src` (an app with its own IP) to the shared IP, port 9 (closed). */
function syn(): Uint8Array {
  const f = new Uint8Array(54);
  mac(f, 0, NIC_MAC);
  mac(f, 6, APP_MAC);
  f[12] = 0x08;
  f[14] = 0x45;
  f[17] = 40;
  f[22] = 64;
  f[23] = 6;
  new DataView(f.buffer).setUint32(26, OWN);
  new DataView(f.buffer).setUint32(30, SHARED);
  f[34] = 0xc0; // source port 49152
  f[37] = 9; // destination port 9
  new DataView(f.buffer).setUint32(38, 1000);
  f[46] = 5 << 4;
  f[47] = 0x02; // SYN
  return f;
}

test('a hairpin to a closed port on the shared IP is answered back to the app, not sent out of the NIC', () => {
  const fw = new Forwarder({ nicMac: NIC_MAC, sharedIp: SHARED, prefixLen: 24 });
  fw.setPorts([
    { port: NIC_PORT, name: 'nic', mac: NIC_MAC, ip: null },
    { port: 1, name: 'web', mac: NIC_MAC, ip: null },
    { port: 3, name: 'own', mac: APP_MAC, ip: OWN },
  ]);
  const d = new Decisions();
  const f = syn();
  fw.decide([{ port: 3, id: 7, len: f.length, head: f }], (keys) => keys.map(() => undefined), d);
  assert.is(d.builtCount, 1, 'one reset built');
  const b = d.builtBytes();
  const port = b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24);
  assert.is(port, 3, 'the reset goes back to the app that sent the SYN');
  const rst = b.subarray(16);
  assert.is(rst[47], 0x14, 'RST+ACK');
  assert.is(new DataView(rst.buffer, rst.byteOffset).getUint32(30), OWN, 'addressed to the app');
});

test.run();
