// The multiserver benchmark (`make bench`, as root): the same netapp
// measured three ways in one run, by the same client
// (bench/stack-client.mjs) from the host's network namespace:
//
//   server  - behind the network server, on the shared IP of a TAP NIC
//             (libretto run MANIFEST): the multiserver path
//   direct  - on a TAP device of its own (libretto app): the library-OS path
//   linux   - the same services from Linux over a veth pair, for scale
//
// Figures: bulk throughput each way, request rate (16 connections of
// 64-byte ping-pongs) and ping-pong latency. Writes
// bench/results/system.json and prints a table with server/direct and
// libretto/Linux ratios. Removes what it made, even on failure.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sh } from './lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BYTES = Number(process.env.LIBRETTO_BENCH_BYTES ?? 256 << 20);
const PINGS = Number(process.env.LIBRETTO_BENCH_PINGS ?? 3000);
const ROUNDS = Number(process.env.LIBRETTO_BENCH_ROUNDS ?? 3);
const APP = process.env.LIBRETTO_BENCH_APP ?? join(root, 'build/components/netapp.wasm');
const SERVER = process.env.LIBRETTO_BENCH_SERVER ?? join(root, 'build/components/network-server.wasm');

if (process.getuid?.() !== 0) {
  console.log('bench/system.mjs: skipped: needs root for TAP devices and a veth pair (run make bench as root)');
  process.exit(0);
}

const cleanup = () => sh('ip link del lbsrv0 2>/dev/null; ip link del lbdir0 2>/dev/null; ip netns del lbpeer 2>/dev/null; ip link del lbpv0 2>/dev/null', true);
cleanup();
const procs = [];
process.on('exit', () => {
  for (const p of procs) p.kill('SIGKILL');
  cleanup();
});

function started(proc, re, what) {
  return new Promise((ok, fail) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`${what} did not start: ${out}`)), 60_000);
    const on = (d) => {
      out += d;
      if (re.test(out)) {
        clearTimeout(timer);
        ok();
      }
    };
    proc.stdout.on('data', on);
    proc.stderr.on('data', on);
  });
}

const services = ['echo=7', 'discard=9', 'source=19', `source-bytes=${BYTES}`];
const dir = mkdtempSync(join(tmpdir(), 'libretto-bench-'));

// server: the app behind the network server.
sh('ip tuntap add dev lbsrv0 mode tap && ip addr add 10.84.0.1/24 dev lbsrv0 && ip link set lbsrv0 up');
const manifest = join(dir, 'bench.json');
writeFileSync(
  manifest,
  JSON.stringify({
    name: 'bench',
    control: join(dir, 'ctl.sock'),
    nic: { tap: 'lbsrv0', mac: '02:00:00:00:cc:01' },
    shared_ip: '10.84.0.2/24',
    network_server: SERVER,
    apps: [{ name: 'app', image: APP, ports: { tcp: [7, 9, 19] }, args: Object.fromEntries(services.map((s) => s.split('='))) }],
  }),
);
const sys = spawn(join(root, 'bin/libretto'), ['run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
procs.push(sys);
await started(sys, /\[app\] netapp: 10\.84\.0\.2/, 'the system');

// direct: the app on a TAP device of its own.
sh('ip tuntap add dev lbdir0 mode tap && ip addr add 10.85.0.1/24 dev lbdir0 && ip link set lbdir0 up');
const direct = spawn(join(root, 'bin/libretto'), ['app', APP, '--tap', 'lbdir0', 'ip=10.85.0.2/24', ...services], { stdio: ['ignore', 'pipe', 'pipe'] });
procs.push(direct);
await started(direct, /netapp: 10\.85\.0\.2/, 'the direct app');

// linux: the same services over a veth pair.
sh('ip netns add lbpeer && ip link add lbpv0 type veth peer name lbpv1 && ip link set lbpv1 netns lbpeer');
sh('ip addr add 10.86.0.1/24 dev lbpv0 && ip link set lbpv0 up');
sh('ip -n lbpeer addr add 10.86.0.2/24 dev lbpv1 && ip -n lbpeer link set lbpv1 up && ip -n lbpeer link set lo up');
const peer = spawn('ip', ['netns', 'exec', 'lbpeer', process.execPath, join(root, 'bench/linux-peer.mjs'), '10.86.0.2', String(BYTES)], { stdio: ['ignore', 'pipe', 'pipe'] });
procs.push(peer);
await started(peer, /linux-peer:/, 'the Linux peer');

function measure(ip) {
  const r = spawnSync(process.execPath, [join(root, 'bench/stack-client.mjs'), ip, String(BYTES), String(PINGS), 'all'], { encoding: 'utf8', timeout: 900_000 });
  if (r.status !== 0) throw new Error(`client against ${ip} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const peers = { server: '10.84.0.2', direct: '10.85.0.2', linux: '10.86.0.2' };
const runs = { server: [], direct: [], linux: [] };
for (let i = 0; i < ROUNDS; i++) {
  for (const who of Object.keys(peers)) runs[who].push(measure(peers[who]));
  console.log(`round ${i + 1}/${ROUNDS} done`);
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pick = (who, key) => median(runs[who].map((r) => r[key]));

const rows = [
  ['bulk Linux -> app (upload)', 'uploadBps', 'Gbit/s', 1e9, true],
  ['bulk app -> Linux (download)', 'downloadBps', 'Gbit/s', 1e9, true],
  ['request rate, 16 conns x 64 B', 'requestsPerSec', 'k/s', 1e3, true],
  ['ping-pong round trip, median', 'rttMedianUs', 'us', 1, false],
];
const figures = [];
const fmt = (x, unit) => (unit === 'us' ? x.toFixed(0) : x.toFixed(2)).padStart(8);
console.log(`\n${'figure'.padEnd(32)} ${'server'.padStart(14)} ${'direct'.padStart(14)} ${'Linux'.padStart(14)} ${'srv/dir'.padStart(8)} ${'dir/Linux'.padStart(9)}`);
for (const [label, key, unit, scale, higher] of rows) {
  const v = Object.fromEntries(Object.keys(peers).map((w) => [w, pick(w, key) / scale]));
  const ratio = (a, b) => (higher ? a / b : b / a);
  console.log(
    `${label.padEnd(32)} ${fmt(v.server, unit)} ${unit.padEnd(5)} ${fmt(v.direct, unit)} ${unit.padEnd(5)} ${fmt(v.linux, unit)} ${unit.padEnd(5)} ${ratio(v.server, v.direct).toFixed(3).padStart(8)} ${ratio(v.direct, v.linux).toFixed(3).padStart(9)}`,
  );
  for (const w of Object.keys(peers)) figures.push({ name: `system.${w}.${key}`, value: v[w], unit });
  figures.push({ name: `system.ratio.server-over-direct.${key}`, value: ratio(v.server, v.direct), unit: 'ratio' });
  figures.push({ name: `system.ratio.direct-over-linux.${key}`, value: ratio(v.direct, v.linux), unit: 'ratio' });
}
console.log(`(${ROUNDS} rounds, medians; ${BYTES >> 20} MiB each way; ratios: 1.0 = as good)`);
mkdirSync(join(root, 'bench/results'), { recursive: true });
writeFileSync(join(root, 'bench/results/system.json'), JSON.stringify(figures, null, 2) + '\n');
console.log('wrote bench/results/system.json');
process.exit(0);
