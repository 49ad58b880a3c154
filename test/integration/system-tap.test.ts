/**
 * The multiserver system over TAP: one network server shares a NIC among
 * apps. From Linux at the same time: two apps share one IP on different
 * ports and a third has its own IP; each answers; an unbound port gets a
 * reset. A forbidden port and a taken port are refused to the apps that
 * ask; a crashed app's ports are freed; `ctl` statistics match what was
 * sent.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { BIN, component, run } from './helpers.ts';
import { canAdminNetwork, sh, TapDevice } from './net.ts';

const gate = canAdminNetwork();
const dir = mkdtempSync(join(tmpdir(), 'libretto-system-'));

function skipOrFail(): boolean {
  if (gate.ok) return false;
  if (process.env.CI) throw new Error(`TAP tests must run in CI: ${gate.why}`);
  console.log(`    skipped: ${gate.why}`);
  return true;
}

class System {
  out = '';
  proc;
  exited: Promise<number | null>;
  constructor(readonly manifest: string) {
    this.proc = spawn(BIN, ['run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout.on('data', (d) => (this.out += d));
    this.proc.stderr.on('data', (d) => (this.out += d));
    this.exited = new Promise((r) => this.proc.on('close', (c) => r(c)));
  }
  async waitFor(re: RegExp, ms = 30_000): Promise<RegExpMatchArray> {
    const t0 = Date.now();
    for (;;) {
      const m = this.out.match(re);
      if (m) return m;
      if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${re}; output:\n${this.out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  ctl(cmd: string): any {
    const r = run(BIN, ['ctl', '--manifest', this.manifest, '--json', cmd]);
    if (r.status !== 0) throw new Error(`ctl ${cmd}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  }
  async stop(): Promise<number | null> {
    this.proc.kill('SIGTERM');
    const code = await Promise.race([this.exited, new Promise<null>((r) => setTimeout(() => r(null), 10_000))]);
    this.proc.kill('SIGKILL');
    return code;
  }
}

function manifest(name: string, tap: string, net: string, apps: object[]): string {
  const path = join(dir, `${name}.json`);
  writeFileSync(
    path,
    JSON.stringify({
      name,
      control: join(dir, `${name}.sock`),
      nic: { tap, mac: '02:00:00:00:bb:01' },
      shared_ip: `${net}.2/24`,
      network_server: component('network-server.wasm'),
      apps,
    }),
  );
  return path;
}

test('three apps behind one network server answer Linux at once; closed ports get RST; ctl counts match', async () => {
  if (skipOrFail()) return;
  const tap = new TapDevice('lbsys1', '10.91.0.1');
  const app = component('netapp.wasm');
  const m = manifest('three', 'lbsys1', '10.91.0', [
    { name: 'echo', image: app, ports: { tcp: [7], udp: [7] }, args: { echo: 7, 'udp-echo': 7 } },
    { name: 'discard', image: app, ports: { tcp: [9] }, args: { discard: 9 } },
    { name: 'own', image: app, ip: '10.91.0.3/24', args: { echo: 7 } },
  ]);
  const sys = new System(m);
  try {
    await sys.waitFor(/\[echo\] netapp: 10\.91\.0\.2\/24/);
    await sys.waitFor(/\[discard\] netapp:/);
    await sys.waitFor(/\[own\] netapp: 10\.91\.0\.3\/24/);
    // All at once: two apps on the shared IP and one on its own IP.
    const payload = randomBytes(4 << 20);
    const file = join(dir, 'payload.bin');
    writeFileSync(file, payload);
    const want = createHash('sha256').update(payload).digest('hex');
    const r = sh(
      `(printf 'shared echo\\n' | timeout 10 nc -q 1 10.91.0.2 7 > ${dir}/a.out) & ` +
        `(timeout 20 nc -q 1 10.91.0.2 9 < ${file} > /dev/null) & ` +
        `(printf 'own echo\\n' | timeout 10 nc -q 1 10.91.0.3 7 > ${dir}/c.out) & wait; cat ${dir}/a.out ${dir}/c.out`,
      60_000,
    );
    assert.is(r.out, 'shared echo\nown echo\n');
    const d = await sys.waitFor(/discard 10\.91\.0\.1:\d+ closed after (\d+) bytes, sha256 ([0-9a-f]{64})/);
    assert.is(Number(d[1]), 4 << 20);
    assert.is(d[2], want);

    // An unbound port on the shared IP gets a reset, as from a kernel.
    const closed = sh('timeout 5 nc -z -v 10.91.0.2 8080');
    assert.match(closed.out, /refused/, closed.out);
    // Ping on the shared IP is the server's to answer; on the own IP, the app's.
    assert.match(sh('ping -c 2 -i 0.2 -W 2 10.91.0.2').out, /2 received/);
    assert.match(sh('ping -c 2 -i 0.2 -W 2 10.91.0.3').out, /2 received/);

    const apps = sys.ctl('apps');
    assert.equal(apps.apps.map((a: any) => [a.name, a.ip, a.shared_ip, a.status]), [
      ['echo', '10.91.0.2', true, 'running'],
      ['discard', '10.91.0.2', true, 'running'],
      ['own', '10.91.0.3', false, 'running'],
    ]);
    const pm = sys.ctl('portmap');
    assert.equal(pm.entries.map((e: any) => `${e.proto}/${e.port}/${e.app}`), ['tcp/7/echo', 'tcp/9/discard', 'udp/7/echo']);

    // The counters match what was sent: the discard app's port delivered
    // at least the 4 MiB of payload, the closed port cost one drop for no
    // listener and one reset built by the server, and the two pings to
    // the shared IP were consumed by it.
    const st = sys.ctl('stats');
    const port = (name: string) => st.ports.find((p: any) => p.name === name);
    assert.ok(port('discard').out_bytes >= 4 << 20, `discard out_bytes ${port('discard').out_bytes}`);
    assert.ok(port('discard').out_bytes < (4 << 20) * 1.05, `discard out_bytes ${port('discard').out_bytes}`);
    assert.is(st.server.drops['no-listener'], 1, JSON.stringify(st.server));
    assert.is(st.server.built >= 1 + 2, true, 'a reset and two echo replies built');
    assert.is(st.server.consumed >= 2, true, 'two pings (and ARP requests) consumed');
    assert.is(st.server.leaked, 0);
    assert.is(st.server.invalid, 0);
    assert.ok(st.nic.rx_bytes >= 4 << 20);
  } finally {
    const code = await sys.stop();
    tap.remove();
    assert.is(code, 0, `the system stops cleanly on SIGTERM:\n${sys.out.slice(-2000)}`);
  }
});

test('a taken port and a forbidden port are refused; a crashed app frees its ports', async () => {
  if (skipOrFail()) return;
  const tap = new TapDevice('lbsys2', '10.92.0.1');
  const app = component('netapp.wasm');
  const m = manifest('ports', 'lbsys2', '10.92.0', [
    { name: 'holder', image: app, ports: { tcp: [7] }, args: { echo: 7 } },
    { name: 'crasher', image: app, ports: { tcp: [5555] }, args: { echo: 5555, 'crash-after-ms': 2500 } },
    { name: 'forbidden', image: app, ports: { tcp: [8000] }, args: { echo: 22 } },
  ]);
  const sys = new System(m);
  try {
    await sys.waitFor(/\[holder\] netapp: 10\.92\.0\.2\/24/);
    await sys.waitFor(/\[forbidden\] netapp: echo=22: cannot listen: forbidden/);
    await sys.waitFor(/\[crasher\] netapp: 10\.92\.0\.2\/24/);
    // The crasher holds 5555 and answers on it until it crashes.
    assert.is(sh("printf 'x\\n' | timeout 5 nc -q 1 10.92.0.2 5555").out, 'x\n');
    let pm = sys.ctl('portmap');
    assert.ok(pm.entries.some((e: any) => e.port === 5555 && e.app === 'crasher'), JSON.stringify(pm));
    await sys.waitFor(/app `crasher` crashed: .*; its ports are free/, 20_000);
    pm = sys.ctl('portmap');
    assert.not.ok(pm.entries.some((e: any) => e.port === 5555), `5555 is free after the crash: ${JSON.stringify(pm)}`);
    assert.match(sh('timeout 5 nc -z -v 10.92.0.2 5555').out, /refused/);
    const apps = sys.ctl('apps').apps;
    assert.match(apps.find((a: any) => a.name === 'crasher').status, /^crashed/);
    assert.match(apps.find((a: any) => a.name === 'forbidden').status, /forbidden/);
    assert.is(apps.find((a: any) => a.name === 'holder').status, 'running');
  } finally {
    await sys.stop();
    tap.remove();
  }
});

test('a second app granted the same port is refused it while the first holds it', async () => {
  if (skipOrFail()) return;
  const tap = new TapDevice('lbsys3', '10.93.0.1');
  const app = component('netapp.wasm');
  const m = manifest('taken', 'lbsys3', '10.93.0', [
    { name: 'first', image: app, ports: { tcp: [7] }, args: { echo: 7 } },
    { name: 'second', image: app, ports: { tcp: [7] }, args: { echo: 7 } },
  ]);
  const sys = new System(m);
  try {
    // One of the two binds port 7 first; the other is refused with in-use.
    const refused = await sys.waitFor(/\[(first|second)\] netapp: echo=7: cannot listen: in-use/);
    const winner = refused[1] === 'first' ? 'second' : 'first';
    const pm = sys.ctl('portmap');
    assert.equal(pm.entries.map((e: any) => `${e.proto}/${e.port}/${e.app}`), [`tcp/7/${winner}`]);
    assert.is(sh("printf 'y\\n' | timeout 5 nc -q 1 10.93.0.2 7").out, 'y\n');
  } finally {
    await sys.stop();
    tap.remove();
  }
});

test('a bad manifest gets one clear line naming the field, and exit 2', () => {
  const path = join(dir, 'bad.json');
  writeFileSync(path, JSON.stringify({ nic: { tap: 'x' }, shared_ip: '10.0.0.2/24', network_server: component('network-server.wasm'), apps: [{ name: 'a', image: component('netapp.wasm'), ports: { tcp: ['80-70'] } }] }));
  const r = run(BIN, ['run', path]);
  assert.is(r.status, 2);
  assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /bad\.json: apps\[0\]\.ports\.tcp\[0\]: "80-70" is not a port/);
});

test.run();
