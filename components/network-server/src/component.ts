/**
 * The network server component: its loop drains every port's ring in one
 * batch, decides each frame (`forward.ts`), and moves frames with one
 * `forward` call and built replies with one `send` call per batch.
 * Everything that must survive a restart (rings, the portmap, counters
 * the host keeps) lives in the host.
 */
import * as host from 'libretto:io/host@0.1.0';
import * as nic from 'libretto:net/nic@0.1.0';
import * as lookup from 'libretto:net/portmap-lookup@0.1.0';
import * as rings from 'libretto:net/rings@0.1.0';
import { num, u32, u64 } from '../../lib/abi.ts';
import { Decisions, Forwarder, parseBatch, type InFrame, type PortView } from './forward.ts';

let forwarder: Forwarder | null = null;
let batches = 0;

function ipOf(t: readonly number[]): number {
  return ((t[0] << 24) | (t[1] << 16) | (t[2] << 8) | t[3]) >>> 0;
}

function loadPorts(f: Forwarder): void {
  const ports: PortView[] = rings.ports().map((p) => ({
    port: u32in(p.port),
    name: p.name,
    mac: num(p.mac),
    ip: p.ip === undefined || p.ip === null ? null : ipOf(p.ip),
  }));
  f.setPorts(ports);
}

function u32in(x: number): number {
  return x >>> 0;
}

export const server = {
  run() {
    const info = nic.info();
    const f = (forwarder = new Forwarder({ nicMac: num(info.mac), sharedIp: ipOf(info.sharedIp), prefixLen: info.prefixLen }));
    let generation = num(rings.portsGeneration());
    loadPorts(f);
    host.log(`network-server: shared IP ${info.sharedIp.join('.')}/${info.prefixLen}, ${rings.ports().length} ports`);
    const d = new Decisions();
    const frames: InFrame[] = [];
    const answer = (keys: { proto: 'tcp' | 'udp'; port: number }[]) => lookup.lookup(keys).map((x) => (x === undefined || x === null ? undefined : x >>> 0));
    for (;;) {
      const batch = rings.recv(256);
      if (batch.length === 0) {
        const w = rings.wait(u64(num(rings.now()) + 1e9));
        if (w === 'stop') return { tag: 'stopped' as const };
        const g = num(rings.portsGeneration());
        if (g !== generation) {
          generation = g;
          loadPorts(f);
        }
        continue;
      }
      parseBatch(batch, frames);
      d.reset();
      f.decide(frames, answer, d);
      if (d.builtCount) rings.send(d.builtBytes());
      if (d.routeCount) rings.forward(d.routeBytes());
      batches++;
    }
  },
};

export const control = {
  describe() {
    return { name: 'network-server', version: `0.1.0+${__LIBRETTO_BACKEND__}` };
  },
  stats() {
    const out = [{ name: 'batches', value: u64(batches) }];
    if (forwarder) for (const [name, value] of forwarder.counters) out.push({ name, value: u64(value) });
    return out;
  },
};
void u32;
