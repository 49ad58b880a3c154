/**
 * The dynamic switch and server recovery under load, over TAP: an httpd
 * image with its own IP and a NIC of its own (two TAP devices on one Linux
 * bridge, Linux at .1). While wrk drives it: switching between server and
 * direct mode every second for 30 s, killing the network server, making it
 * hang, crashing it and hot-swapping it, each with zero failed requests
 * and zero reset connections; a bad swap is refused and traffic goes on;
 * the automatic policy switches on load. A prober measures the longest gap
 * in service after each event (printed).
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
const dir = mkdtempSync(join(tmpdir(), 'libretto-switch-'));

function skipOrFail(): boolean {
  if (gate.ok) return false;
  if (process.env.CI) throw new Error(`TAP tests must run in CI: ${gate.why}`);
  console.log(`    skipped: ${gate.why}`);
  return true;
}

/** A bridge with the system's NIC and the app's own NIC on it; Linux at .1. */
function bridge(br: string, nic: string, own: string, net: string): () => void {
  const down = () => sh(`ip link del ${nic} 2>/dev/null; ip link del ${own} 2>/dev/null; ip link del ${br} 2>/dev/null`);
  down();
  const r = sh(
    `ip link add ${br} type bridge && ip tuntap add dev ${nic} mode tap && ip tuntap add dev ${own} mode tap && ` +
      `ip link set ${nic} master ${br} && ip link set ${own} master ${br} && ip addr add ${net}.1/24 dev ${br} && ` +
      `ip link set ${nic} up && ip link set ${own} up && ip link set ${br} up`,
  );
  if (r.status !== 0) throw new Error(r.out);
  return down;
}

function startSystem(name: string, manifest: object) {
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify(manifest));
  const proc = spawn(BIN, ['run', path], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const exited = new Promise((r) => proc.on('close', r));
  return {
    path,
    get out() {
      return out;
    },
    async up(re: RegExp) {
      const t0 = Date.now();
      while (!re.test(out)) {
        if (Date.now() - t0 > 60_000) throw new Error(`did not come up:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    ctl(...args: string[]): string {
      const r = run(BIN, ['ctl', '--manifest', path, ...args], { timeoutMs: 90_000 });
      return (r.status === 0 ? '' : 'ERROR ') + r.stdout + r.stderr;
    },
    async stop() {
      proc.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      proc.kill('SIGKILL');
    },
  };
}

/** Sequential keep-alive requests; completion times, to find gaps in service. */
/** Every prober still running, so a failed test's `finally` can end them. */
const probers = new Set<{ end(): Promise<void> }>();
async function stopProbers(): Promise<void> {
  await Promise.all([...probers].map((p) => p.end()));
}

function prober(url: string) {
  const done: number[] = [];
  let failures = 0;
  const why: string[] = [];
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      try {
        const r = await fetch(url, { signal: AbortSignal.timeout(10_000) });
        await r.arrayBuffer();
        if (r.status === 200) done.push(Date.now());
        else {
          failures++;
          why.push(`${new Date().toISOString()} status ${r.status}`);
        }
      } catch (e) {
        failures++;
        const c = (e as { cause?: { code?: string; message?: string } }).cause;
        why.push(`${new Date().toISOString()} ${(e as Error).message}${c ? `: ${c.code ?? ''} ${c.message ?? ''}` : ''}`);
      }
    }
  })();
  const p = {
    /** The longest gap between completions in [from, from + windowMs]. */
    gapAfter(from: number, windowMs = 1500): number {
      const xs = done.filter((t) => t >= from - 200 && t <= from + windowMs);
      let gap = 0;
      for (let i = 1; i < xs.length; i++) gap = Math.max(gap, xs[i] - xs[i - 1]);
      return gap;
    },
    get failures() {
      return failures;
    },
    /** What each failure was, with its time. */
    get why() {
      return why.join('; ');
    },
    get count() {
      return done.length;
    },
    async end() {
      stop = true;
      probers.delete(p);
      await loop;
    },
  };
  probers.add(p);
  return p;
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

function checkWrk(out: string): number {
  assert.not.match(out, /Socket errors/, `wrk saw socket errors (resets, timeouts):\n${out}`);
  assert.not.match(out, /Non-2xx/, `wrk saw failed requests:\n${out}`);
  const m = /(\d+) requests in/.exec(out);
  assert.ok(m && Number(m[1]) > 0, out);
  return Number(m![1]);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function manifest(name: string, nic: string, own: string, net: string, extra: object = {}) {
  return {
    name,
    control: join(dir, `${name}.sock`),
    nic: { tap: nic, mac: '02:00:00:00:61:01' },
    shared_ip: `${net}.2/24`,
    network_server: component('network-server.wasm'),
    apps: [{ name: 'web', image: join(ROOT, 'build/images/httpd.wasm'), ip: `${net}.3/24`, direct: { tap: own }, args: { port: 80 } }],
    ...extra,
  };
}

test('switching server <-> direct every second for 30 s under wrk: no failed request, no reset', async () => {
  if (skipOrFail()) return;
  const down = bridge('lbswbr0', 'lbswn0', 'lbswd0', '10.71.0');
  const sys = startSystem('switch', manifest('switch', 'lbswn0', 'lbswd0', '10.71.0'));
  try {
    await sys.up(/httpd: listening on port 80/);
    const url = 'http://10.71.0.3/4k';
    const probe = prober(url);
    const load = wrk(url, 32);
    await sleep(1000);
    const gaps: number[] = [];
    for (let i = 0; i < 30; i++) {
      const to = i % 2 === 0 ? 'direct' : 'server';
      const t = Date.now();
      const r = sys.ctl('switch', 'web', to);
      assert.match(r, new RegExp(`switched to ${to} mode`), r);
      await sleep(1000);
      gaps.push(probe.gapAfter(t));
    }
    const out = await load;
    await probe.end();
    const n = checkWrk(out);
    assert.is(probe.failures, 0, `the prober saw failures: ${probe.why}`);
    gaps.sort((a, b) => a - b);
    console.log(`    30 switches under wrk: ${n} requests, 0 errors; longest gap in service after a switch: median ${gaps[15]} ms, max ${gaps[29]} ms`);
    assert.match(sys.ctl('apps'), /web .* server/);
    const events = sys.ctl('events');
    assert.is((events.match(/switched to (direct|server) mode/g) ?? []).length, 30);
  } finally {
    await stopProbers();
    await sys.stop();
    down();
  }
});

test('killing, hanging, crashing and hot-swapping the network server under wrk: no failed request, no reset; a bad swap is refused', async () => {
  if (skipOrFail()) return;
  const down = bridge('lbswbr1', 'lbswn1', 'lbswd1', '10.72.0');
  const sys = startSystem('recover', manifest('recover', 'lbswn1', 'lbswd1', '10.72.0'));
  try {
    await sys.up(/httpd: listening on port 80/);
    const url = 'http://10.72.0.3/4k';
    const probe = prober(url);
    const load = wrk(url, 26);
    await sleep(1500);
    const results: string[] = [];
    const event = async (what: string, ...args: string[]) => {
      const t = Date.now();
      const r = sys.ctl(...args);
      await sleep(3500);
      results.push(`${what}: ${probe.gapAfter(t, 3000)} ms`);
      return r;
    };
    assert.match(await event('kill', 'kill', 'network-server'), /killed/);
    assert.match(await event('hang', 'fault', 'network-server', 'hang'), /will hang/);
    assert.match(await event('crash', 'fault', 'network-server', 'crash'), /will crash/);
    // Another file of the server (the QuickJS build by its own name): the
    // whole swap runs (checks, stop, start, 3 s on probation) without a
    // cold compile of a second engine's build under load.
    const swap = await event('swap', 'swap', 'network-server', component('network-server.quickjs.wasm'));
    assert.match(swap, /swapped to .*network-server\.quickjs\.wasm/, swap);
    // Bad swaps: refused, the running server goes on.
    const notServer = sys.ctl('swap', 'network-server', component('netapp.wasm'));
    assert.match(notServer, /^ERROR .*not a network server/, notServer);
    const notWasm = sys.ctl('swap', 'network-server', '/etc/hostname');
    assert.match(notWasm, /^ERROR .*not a WebAssembly file/, notWasm);
    const out = await load;
    await probe.end();
    const n = checkWrk(out);
    assert.is(probe.failures, 0, `the prober saw failures: ${probe.why}`);
    console.log(`    under wrk (${n} requests, 0 errors), time until traffic flowed again: ${results.join(', ')}`);
    const apps = sys.ctl('apps');
    assert.match(apps, /network server: running \(3 restarts\)/, apps);
    const events = sys.ctl('events');
    assert.match(events, /watchdog: the network server made no progress/);
    assert.match(events, /swapping .* for .*network-server\.quickjs\.wasm/);
  } finally {
    await stopProbers();
    await sys.stop();
    down();
  }
});

test('the policy moves an app direct under load and back when idle', async () => {
  if (skipOrFail()) return;
  const down = bridge('lbswbr2', 'lbswn2', 'lbswd2', '10.73.0');
  const sys = startSystem(
    'policy',
    manifest('policy', 'lbswn2', 'lbswd2', '10.73.0', { policy: { direct_above_pps: 400, server_below_pps: 50, max_direct: 1, interval_ms: 250, min_dwell_ms: 1000 } }),
  );
  try {
    await sys.up(/httpd: listening on port 80/);
    assert.match(sys.ctl('apps'), /web .* server/);
    checkWrk(await wrk('http://10.73.0.3/4k', 4));
    assert.match(sys.ctl('events'), /policy: app `web` at \d+ packets\/s[\s\S]*switched to direct mode/);
    await sleep(2500);
    const events = sys.ctl('events');
    assert.match(events, /switched to server mode/, events);
    assert.match(sys.ctl('apps'), /web .* server/);
  } finally {
    await stopProbers();
    await sys.stop();
    down();
  }
});

test.run();
