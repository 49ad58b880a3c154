/**
 * The netpipe image (NPtcp's receiver on the POSIX shim and the TCP/IP
 * stack) behind the network server on a TAP device, measured by Debian's
 * NPtcp from Linux (`NPtcp -h IP`, the transmitter): the ping-pong run
 * across its message sizes (bounded with -u to keep the test short; the
 * full default run to 8 MiB is in bench/netpipe.mjs), streaming (-s),
 * Reset (-r) and bi-directional (-2) runs, each with every size reached
 * and a throughput above zero; a client that speaks nonsense fails its
 * run, not the app.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, component, ROOT, run } from './helpers.ts';
import { canAdminNetwork, sh, TapDevice } from './net.ts';
import { Schedule } from '../../components/apps/netpipe/src/proto.ts';

const gate = canAdminNetwork();
const dir = mkdtempSync(join(tmpdir(), 'libretto-netpipe-'));
const IP = '10.62.2.2';

/** Why the tests cannot run here ('' if they can). */
const cannot = !gate.ok ? gate.why : sh('command -v NPtcp').status !== 0 ? 'needs NPtcp (netpipe-tcp)' : '';

function skipOrFail(): boolean {
  const why = cannot;
  if (!why) return false;
  if (process.env.CI) throw new Error(`TAP tests must run in CI: ${why}`);
  console.log(`    skipped: ${why}`);
  return true;
}

let sys: { out: () => string; stop: () => Promise<number | null>; manifest: string } | null = null;
let tap: TapDevice | null = null;

test.before(async () => {
  if (cannot) return;
  tap = new TapDevice('lmcnp0', '10.62.2.1');
  const manifest = join(dir, 'np.json');
  writeFileSync(
    manifest,
    JSON.stringify({
      name: 'lmc-np',
      control: join(dir, 'np.sock'),
      nic: { tap: 'lmcnp0', mac: '02:00:00:00:62:21' },
      shared_ip: `${IP}/24`,
      network_server: component('network-server.wasm'),
      apps: [{ name: 'np', image: join(ROOT, 'build/images/netpipe.wasm'), ports: { tcp: [5002] }, args: {} }],
    }),
  );
  const proc = spawn(BIN, ['run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.on('close', (c) => r(c)));
  const t0 = Date.now();
  while (!/netpipe: NPtcp receiver listening on port 5002/.test(out)) {
    if (Date.now() - t0 > 60_000) throw new Error(`netpipe did not come up:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  sys = {
    out: () => out,
    manifest,
    async stop() {
      proc.kill('SIGTERM');
      const code = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 10_000))]);
      proc.kill('SIGKILL');
      return code;
    },
  };
});

test.after(async () => {
  if (sys) {
    const code = await sys.stop();
    if (code !== 0) console.log(`the system exited ${code}:\n${sys.out().slice(-3000)}`);
  }
  tap?.remove();
});

interface Point {
  bytes: number;
  mbps: number;
  seconds: number;
}

/** Run NPtcp -h against the app; its -o file, parsed and checked. */
function nptcp(flags: string[], name: string, timeoutMs: number): { points: Point[]; out: string } {
  const file = join(dir, `${name}.out`);
  const r = run('NPtcp', ['-h', IP, '-o', file, ...flags], { timeoutMs });
  const out = r.stdout + r.stderr;
  assert.is(r.status, 0, `NPtcp ${flags.join(' ')} exited ${r.status}:\n${out.slice(-2000)}`);
  assert.not.match(out, /NetPIPE: |Integrity check failed|Synchronization string incorrect|end of file/, out.slice(-2000));
  const points = readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.trim().split(/\s+/).map(Number))
    .map(([bytes, mbps, seconds]) => ({ bytes, mbps, seconds }));
  for (const p of points) {
    assert.ok(p.mbps > 0 && Number.isFinite(p.mbps), `${name}: throughput at ${p.bytes} bytes is ${p.mbps}`);
    assert.ok(p.seconds > 0, `${name}: time at ${p.bytes} bytes is ${p.seconds}`);
  }
  return { points, out };
}

/** The app's line for the `n`th run that ended (1-based), once it is logged. */
async function ended(n: number): Promise<string> {
  const t0 = Date.now();
  for (;;) {
    const runs = [...sys!.out().matchAll(/netpipe: run \d+ from \S+ (done|failed|aborted)(: |\b).*/g)];
    if (runs.length >= n) return runs[n - 1][0];
    if (Date.now() - t0 > 10_000) return `(run ${n} has not ended; ${runs.length} have)`;
    await new Promise((r) => setTimeout(r, 50));
  }
}
let runs = 0;

test('NPtcp ping-pong to 1 MiB: every size of the schedule, throughput > 0 at each', async () => {
  if (skipOrFail()) return;
  const t0 = Date.now();
  const { points } = nptcp(['-u', '1048576'], 'pingpong', 100_000);
  const want = Schedule.sizes(1048576);
  assert.equal(points.map((p) => p.bytes), want, 'every size NPtcp scheduled, in order');
  assert.is(want[want.length - 1], 1048579);
  const small = points[0];
  const best = Math.max(...points.map((p) => p.mbps));
  console.log(`    ping-pong: ${points.length} sizes in ${((Date.now() - t0) / 1000).toFixed(1)} s; 1 byte: ${(small.seconds * 1e6).toFixed(0)} us one way; best ${best.toFixed(0)} Mbit/s`);
  assert.match(await ended(++runs), new RegExp(`done: ping-pong, ${want.length} sizes up to 1048579 bytes`));
});

test('NPtcp -s (streaming, the connection reset between trials), -r (Reset) and -2 (both directions), with fixed repeat counts', async () => {
  if (skipOrFail()) return;
  const s = nptcp(['-s', '-n', '50', '-u', '65536'], 'stream', 60_000);
  assert.equal(s.points.map((p) => p.bytes), Schedule.sizes(65536));
  assert.match(await ended(++runs), /done: streaming with Reset, 82 sizes up to 65539 bytes, 12300 messages/);
  const r = nptcp(['-r', '-n', '5', '-u', '1024'], 'reset', 60_000);
  assert.equal(r.points.map((p) => p.bytes), Schedule.sizes(1024));
  assert.match(await ended(++runs), /done: ping-pong with Reset, 46 sizes/);
  // -2: NPtcp writes the bytes of both directions, twice the message size.
  const b = nptcp(['-2', '-n', '10', '-u', '131072'], 'bidir', 60_000);
  assert.equal(b.points.map((p) => p.bytes / 2), Schedule.sizes(131072));
  assert.match(await ended(++runs), /done: ping-pong, 88 sizes up to 131075 bytes/);
});

test('a client that is not NPtcp fails its run; the next NPtcp run is served', async () => {
  if (skipOrFail()) return;
  await new Promise<void>((resolve) => {
    const s = net.connect(5002, IP, () => s.write('GET / HTTP/1.0\r\n\r\n'));
    s.on('data', () => {});
    s.on('close', () => resolve());
    s.on('error', () => resolve());
    setTimeout(() => {
      s.destroy();
      resolve();
    }, 10_000);
  });
  assert.match(await ended(++runs), /failed: "GET \/ " where a sync was due/);
  // One that goes away in the middle of the warm-up.
  await new Promise<void>((resolve) => {
    const s = net.connect(5002, IP, () => s.write('SyncMe'));
    s.on('data', () => {
      s.write(Buffer.from([1]));
      setTimeout(() => s.resetAndDestroy(), 20);
    });
    s.on('close', () => resolve());
    s.on('error', () => resolve());
  });
  assert.match(await ended(++runs), /aborted: /);
  const { points } = nptcp(['-u', '64'], 'after', 30_000);
  assert.equal(points.map((p) => p.bytes), Schedule.sizes(64));
  assert.match(await ended(++runs), /done: ping-pong, 22 sizes up to 67 bytes/);
  const apps = run(BIN, ['ctl', '--manifest', sys!.manifest, '--json', 'apps'], { timeoutMs: 20_000 });
  assert.is(JSON.parse(apps.stdout).apps[0].status, 'running');
});

test.run();
