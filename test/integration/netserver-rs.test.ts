/**
 * The network server in Rust (components/network-server-rs) beside the
 * TypeScript one: the conformance suite (`libretto conform`) feeds both the
 * same seeded frame mix through the host's rings and requires the same
 * forwarding decisions, replies and counters; a build with one rule
 * changed on purpose must be caught, with the frame that differs; the
 * load generator and `libretto netbench` run; and under wrk over TAP the
 * system swaps TypeScript -> Rust -> TypeScript ten times with no failed
 * request and no reset.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, component, ROOT, run } from './helpers.ts';
import { canAdminNetwork, sh } from './net.ts';

const dir = mkdtempSync(join(tmpdir(), 'libretto-nsrs-'));

test('conformance: the TypeScript server (QuickJS, as shipped) and the Rust server agree on a million frames', () => {
  const r = run(BIN, ['conform', component('network-server.wasm'), component('network-server-rs.wasm'), '--frames', '1000000', '--seed', '11'], { timeoutMs: 600_000 });
  const out = r.stdout + r.stderr;
  assert.is(r.status, 0, out);
  assert.match(out, /conform: the same: \d{7,} frames/);
  const counters = /counters \(both\): (.*)/.exec(out)?.[1] ?? '';
  // The mix reaches every rule: each decision and reply is counted.
  for (const c of ['to.app', 'to.nic', 'flood', 'arp.replied', 'icmp.echo-replied', 'tcp.rst-sent', 'icmp.unreachable-sent', 'drop.malformed', 'drop.not-ours', 'drop.no-listener', 'drop.filtered', 'drop.fragment', 'drop.unsupported']) {
    assert.match(counters, new RegExp(`(^| )${c.replace('.', '\\.')}=[1-9]`), `${c} never counted: ${counters}`);
  }
  console.log(`    ${/conform: the same: .*/.exec(out)?.[0]}`);
});

test('conformance: the TypeScript server on StarlingMonkey and the Rust server agree', () => {
  const r = run(BIN, ['conform', component('network-server.starlingmonkey.wasm'), component('network-server-rs.wasm'), '--frames', '300000', '--seed', '12'], { timeoutMs: 600_000 });
  const out = r.stdout + r.stderr;
  assert.is(r.status, 0, out);
  assert.match(out, /conform: the same: \d{6,} frames/);
});

test('conformance: a deliberately changed rule is caught, and the first frame that differs is printed with both outcomes', () => {
  // network-server-rs-mutant drops pings on the shared IP as `unsupported`
  // instead of answering them.
  const r = run(BIN, ['conform', component('network-server-rs.wasm'), component('network-server-rs-mutant.wasm'), '--frames', '1000000', '--seed', '11'], { timeoutMs: 600_000 });
  const out = r.stdout + r.stderr;
  assert.is(r.status, 1, out);
  assert.match(out, /DIFFERENCE at step \d+/);
  const first = /FIRST FRAME THAT DIFFERS: #\d+[^\n]*\n((?: {6}[0-9a-f]{4} .*\n)+)/.exec(out);
  assert.ok(first, out);
  // The frame is an ICMP echo request (IPv4 protocol 1, type 8) to the shared IP 10.63.0.2.
  const bytes = first![1].split('\n').filter(Boolean).flatMap((l) => l.trim().split(/\s+/).slice(1)).map((h) => parseInt(h, 16));
  assert.is(bytes[12] * 256 + bytes[13], 0x0800, first![1]);
  assert.is(bytes[23], 1, first![1]);
  assert.equal(bytes.slice(30, 34), [10, 63, 0, 2], first![1]);
  assert.is(bytes[14 + (bytes[14] & 0xf) * 4], 8, first![1]);
  // Both outcomes: A answered it (consumed, one frame built), B dropped it.
  assert.match(out, /A [^\n]*network-server-rs\.wasm: not forwarded\n {4}host counters: drops \{\} consumed 1 flooded 0 built 1/);
  assert.match(out, /B [^\n]*network-server-rs-mutant\.wasm: not forwarded\n {4}host counters: drops \{unsupported=1\} consumed 0 flooded 0 built 0/);
  assert.match(out, /conform: DIFFERENT/);
});

test('conform refuses what is not a network server, with one line', () => {
  const r = run(BIN, ['conform', component('network-server-rs.wasm'), component('netapp.wasm')]);
  assert.is(r.status, 2);
  assert.match(r.stderr, /not a network server/);
});

test('the load generator drives each server through the same rings (netbench --quick)', () => {
  const r = run(BIN, ['netbench', '--quick', '--out', dir], { timeoutMs: 300_000 });
  const out = r.stdout + r.stderr;
  assert.is(r.status, 0, out);
  for (const s of ['typescript/quickjs', 'typescript/starlingmonkey', 'rust']) assert.match(out, new RegExp(`^${s} +64 +64 +\\d`, 'm'), out);
  assert.match(out, /typescript\/quickjs \/ rust, cost per frame at burst 64, 64 B: [\d.]+x/);
});

// ---- swapping under load, over TAP ------------------------------------------

const gate = canAdminNetwork();

function skipOrFail(): boolean {
  if (gate.ok) return false;
  if (process.env.CI) throw new Error(`TAP tests must run in CI: ${gate.why}`);
  console.log(`    skipped: ${gate.why}`);
  return true;
}

function wrk(url: string, secs: number): Promise<string> {
  return new Promise((resolve) => {
    const p = spawn('wrk', ['-t2', '-c10', `-d${secs}s`, url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('close', () => resolve(out));
  });
}

test('under wrk, swapping TypeScript -> Rust -> TypeScript ten times: no failed request, no reset', async () => {
  if (skipOrFail()) return;
  const tap = 'lrsn0';
  const net = '10.63.1';
  sh(`ip link del ${tap} 2>/dev/null`);
  const made = sh(`ip tuntap add dev ${tap} mode tap && ip addr add ${net}.1/24 dev ${tap} && ip link set ${tap} up`);
  assert.is(made.status, 0, made.out);
  const manifest = join(dir, 'swap.json');
  writeFileSync(
    manifest,
    JSON.stringify({
      name: 'lrs-swap',
      control: join(dir, 'swap.sock'),
      nic: { tap, mac: '02:00:00:00:63:11' },
      shared_ip: `${net}.2/24`,
      network_server: component('network-server.wasm'),
      apps: [{ name: 'web', image: join(ROOT, 'build/images/httpd.wasm'), ports: { tcp: [80] }, args: { port: 80 } }],
    }),
  );
  const proc = spawn(BIN, ['run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const exited = new Promise((r) => proc.on('close', r));
  const ctl = (...args: string[]) => {
    const r = run(BIN, ['ctl', '--manifest', manifest, ...args], { timeoutMs: 30_000 });
    return (r.status === 0 ? '' : 'ERROR ') + r.stdout + r.stderr;
  };
  try {
    const t0 = Date.now();
    while (!/httpd: listening on port 80/.test(out)) {
      if (Date.now() - t0 > 60_000) throw new Error(`did not come up:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const url = `http://${net}.2/4k`;
    const load = wrk(url, 75);
    await new Promise((r) => setTimeout(r, 1000));
    const ts = component('network-server.wasm');
    const rs = component('network-server-rs.wasm');
    for (let i = 0; i < 10; i++) {
      for (const to of [rs, ts]) {
        const r = ctl('swap', 'network-server', to);
        assert.match(r, new RegExp(`swapped to ${to.replace(/[.]/g, '\\.')}`), r);
      }
    }
    const w = await load;
    assert.not.match(w, /Socket errors/, `wrk saw socket errors (resets, timeouts):\n${w}`);
    assert.not.match(w, /Non-2xx/, `wrk saw failed requests:\n${w}`);
    const n = Number(/(\d+) requests in/.exec(w)?.[1] ?? 0);
    assert.ok(n > 0, w);
    const events = ctl('events');
    assert.is((events.match(/swapping .*network-server\.wasm for .*network-server-rs\.wasm/g) ?? []).length, 10, events);
    assert.is((events.match(/swapping .*network-server-rs\.wasm for .*network-server\.wasm/g) ?? []).length, 10, events);
    assert.not.match(events, /rolling back|trapped|restarting/, events);
    assert.match(ctl('apps'), /network server: running \(0 restarts\)/);
    console.log(`    20 swaps (TypeScript <-> Rust) under wrk: ${n} requests, 0 errors, 0 resets`);
  } finally {
    proc.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    proc.kill('SIGKILL');
    sh(`ip link del ${tap} 2>/dev/null`);
  }
});

test.run();
