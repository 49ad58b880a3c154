/**
 * The packet backend (an AF_PACKET socket on a real Linux interface, the
 * guest image's way to drive a passed-through NIC) on a veth pair in a
 * network namespace of the test's own: httpd answers through it, and its
 * socket filter keeps out what is on the wire for other hosts. Frames to
 * another host's MAC, and to the interface's own hardware MAC (Linux's,
 * not libretto's), never reach the network server: its `not-ours` drops
 * stay at zero while hundreds of them pass, and the NIC port's count of
 * frames in does not grow by them; broadcast (ARP) still gets in.
 *
 * Needs root: skipped outside CI without it, a failure under CI.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, component, ROOT, run } from './helpers.ts';
import { canAdminNetwork, sh } from './net.ts';

const gate = canAdminNetwork();
const dir = mkdtempSync(join(tmpdir(), 'libretto-packet-'));
const NS = 'lpkt';
const IP = '10.67.0.2';
const inNs = (cmd: string) => sh(`ip netns exec ${NS} sh -c '${cmd}'`, 60_000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function skipOrFail(): boolean {
  if (gate.ok) return false;
  if (process.env.CI) throw new Error(`TAP tests must run in CI: ${gate.why}`);
  console.log(`    skipped: ${gate.why}`);
  return true;
}

test('httpd over an AF_PACKET NIC; frames for other MACs never reach the network server', async () => {
  if (skipOrFail()) return;
  sh(`ip netns del ${NS} 2>/dev/null`);
  const made = sh(
    `ip netns add ${NS} && ip netns exec ${NS} sh -c 'ip link set lo up && ip link add lpkt0 type veth peer name lpkt1 && ip link set lpkt0 up && ip addr add 10.67.0.1/24 dev lpkt1 && ip link set lpkt1 up'`,
  );
  assert.is(made.status, 0, made.out);
  let proc: ReturnType<typeof spawn> | null = null;
  let out = '';
  try {
    const manifest = join(dir, 'packet.json');
    const ctl = join(dir, 'packet.sock');
    writeFileSync(
      manifest,
      JSON.stringify({
        name: 'lpkt',
        control: ctl,
        nic: { packet: 'lpkt0', mac: '02:00:00:00:67:02' },
        shared_ip: `${IP}/24`,
        network_server: component('network-server.wasm'),
        apps: [{ name: 'web', image: join(ROOT, 'build/images/httpd.wasm'), ports: { tcp: [80] }, args: { port: 80 } }],
      }),
    );
    proc = spawn('ip', ['netns', 'exec', NS, BIN, 'run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout!.on('data', (d) => (out += d));
    proc.stderr!.on('data', (d) => (out += d));
    const t0 = Date.now();
    while (!/\[web\] httpd: listening on port 80/.test(out)) {
      if (Date.now() - t0 > 60_000) throw new Error(`httpd did not come up:\n${out}`);
      await sleep(100);
    }
    const stats = () => {
      const r = run('ip', ['netns', 'exec', NS, BIN, 'ctl', '--socket', ctl, '--json', 'stats'], { timeoutMs: 30_000 });
      assert.is(r.status, 0, r.stderr);
      const s = JSON.parse(r.stdout);
      const nic = s.ports.find((p: { port: number }) => p.port === 0);
      return { inFrames: nic.in_frames as number, notOurs: (nic.drops['not-ours'] ?? 0) + (s.server.drops['not-ours'] ?? 0) };
    };

    // Through the filter: ARP (broadcast) and then HTTP to libretto's MAC.
    const page = inNs(`curl -s -m 20 -o /dev/null -w "%{http_code} %{size_download}" http://${IP}/128k`);
    assert.is(page.out.trim(), '200 131072', page.out);
    const before = stats();

    // On the wire for others: a host that is not there, and Linux's own MAC on lpkt0.
    const hw = inNs('cat /sys/class/net/lpkt0/address').out.trim();
    assert.match(hw, /^[0-9a-f:]{17}$/);
    const sent = inNs(
      `ip neigh replace 10.67.0.99 lladdr 02:00:00:00:67:99 dev lpkt1 nud permanent && ip neigh replace 10.67.0.98 lladdr ${hw} dev lpkt1 nud permanent && ping -q -c 200 -i 0.005 -W 0.2 10.67.0.99; ping -q -c 200 -i 0.005 -W 0.2 10.67.0.98; ip -s link show lpkt1`,
    );
    assert.match(sent.out, /200 packets transmitted/, sent.out);
    await sleep(300);
    const after = stats();
    assert.is(after.notOurs, before.notOurs, `the network server saw frames for other MACs: ${JSON.stringify({ before, after })}`);
    assert.ok(after.inFrames - before.inFrames < 100, `400 frames for others, the NIC port took ${after.inFrames - before.inFrames} frames: ${JSON.stringify({ before, after })}`);

    // And it still serves.
    const again = inNs(`curl -s -m 20 -o /dev/null -w "%{http_code} %{size_download}" http://${IP}/4k`);
    assert.is(again.out.trim(), '200 4096', again.out);
  } finally {
    proc?.kill('SIGTERM');
    await sleep(500);
    proc?.kill('SIGKILL');
    sh(`ip netns del ${NS} 2>/dev/null`);
    if (proc && !/httpd: listening/.test(out)) console.log(out);
  }
});

test.run();
