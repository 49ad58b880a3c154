// The memcached benchmark (as root): memaslap (Debian's `memcaslap`) in
// binary mode, 64-byte keys, 1 KiB values, 1 SET to 10 GETs as in the
// LibrettOS paper, against three servers reached the same way from the
// host's network stack, in one run:
//
//   server  - the mc image behind the network server, on a TAP NIC
//             (libretto run MANIFEST): the multiserver path
//   direct  - the mc image on a TAP device of its own (libretto app):
//             the library-OS path
//   linux   - Linux's own memcached in a network namespace over a veth
//             pair, for scale
//
// Prints operations per second (median of the rounds) and the ratios
// libretto/Linux; writes bench/results/mc.json. Skips cleanly without
// root or without the tools. Removes what it made, even on failure.
//
// usage: node bench/mc.mjs [--quick]
//   LIBRETTO_BENCH_SECONDS  per memaslap run (default 10; 4 with --quick)
//   LIBRETTO_BENCH_ROUNDS   rounds (default 3; 1 with --quick)
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { barChart } from './svg.mjs';
import { sh, has, started } from './lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const quick = process.argv.includes('--quick');
const SECS = Number(process.env.LIBRETTO_BENCH_SECONDS ?? (quick ? 4 : 10));
const ROUNDS = Number(process.env.LIBRETTO_BENCH_ROUNDS ?? (quick ? 1 : 3));
const THREADS = 2;
const CONCURRENCY = 32;

if (process.getuid?.() !== 0) {
  console.log('bench/mc.mjs: skipped: needs root for TAP devices and a veth pair (run make bench as root)');
  process.exit(0);
}
for (const tool of ['memcaslap', 'memcached', 'ip']) {
  if (!has(tool)) {
    console.log(`bench/mc.mjs: skipped: needs ${tool} (apt-get install libmemcached-tools memcached iproute2)`);
    process.exit(0);
  }
}

const cleanup = () => sh('ip link del lmcbs0 2>/dev/null; ip link del lmcbd0 2>/dev/null; ip netns del lmcbpeer 2>/dev/null; ip link del lmcbv0 2>/dev/null', true);
cleanup();
const procs = [];
process.on('exit', () => {
  for (const p of procs) p.kill('SIGKILL');
  cleanup();
});
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

const dir = mkdtempSync(join(tmpdir(), 'libretto-mc-bench-'));
const image = join(root, 'build/images/mc.wasm');
const args = { port: 11211, 'memory-mb': 1024 };

// server: the image behind the network server.
sh('ip tuntap add dev lmcbs0 mode tap && ip addr add 10.62.10.1/24 dev lmcbs0 && ip link set lmcbs0 up');
const manifest = join(dir, 'mc.json');
writeFileSync(
  manifest,
  JSON.stringify({
    name: 'mc-bench',
    control: join(dir, 'ctl.sock'),
    nic: { tap: 'lmcbs0', mac: '02:00:00:00:62:a1' },
    shared_ip: '10.62.10.2/24',
    network_server: join(root, 'build/components/network-server.wasm'),
    apps: [{ name: 'mc', image, ports: { tcp: [11211] }, args }],
  }),
);
const sys = spawn(join(root, 'bin/libretto'), ['run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
procs.push(sys);
await started(sys, /mc: memcached .* listening/, 'the system');

// direct: the image on a TAP device of its own.
sh('ip tuntap add dev lmcbd0 mode tap && ip addr add 10.62.11.1/24 dev lmcbd0 && ip link set lmcbd0 up');
const direct = spawn(join(root, 'bin/libretto'), ['app', image, '--tap', 'lmcbd0', 'ip=10.62.11.2/24', ...Object.entries(args).map(([k, v]) => `${k}=${v}`)], {
  stdio: ['ignore', 'pipe', 'pipe'],
});
procs.push(direct);
await started(direct, /mc: memcached .* listening/, 'the direct app');

// linux: memcached over a veth pair.
sh('ip netns add lmcbpeer && ip link add lmcbv0 type veth peer name lmcbv1 && ip link set lmcbv1 netns lmcbpeer');
sh('ip addr add 10.62.12.1/24 dev lmcbv0 && ip link set lmcbv0 up');
sh('ip -n lmcbpeer addr add 10.62.12.2/24 dev lmcbv1 && ip -n lmcbpeer link set lmcbv1 up && ip -n lmcbpeer link set lo up');
const mcd = spawn('ip', ['netns', 'exec', 'lmcbpeer', 'memcached', '-u', 'nobody', '-l', '10.62.12.2', '-p', '11211', '-m', '1024', '-t', '1', '-v'], { stdio: ['ignore', 'pipe', 'pipe'] });
procs.push(mcd);
for (let i = 0; i < 50 && sh('timeout 1 bash -c "echo > /dev/tcp/10.62.12.2/11211" && echo up', true).trim() !== 'up'; i++) await new Promise((r) => setTimeout(r, 100));

// 64-byte keys, 1 KiB values, SET:GET 1:10.
const cfg = join(dir, 'memaslap.cfg');
writeFileSync(cfg, 'key\n64 64 1\nvalue\n1024 1024 1\ncmd\n0 0.0909\n1 0.9091\n');

function memaslap(ip) {
  const r = spawnSync('memcaslap', ['-s', `${ip}:11211`, '-B', '-F', cfg, '-t', `${SECS}s`, '-T', String(THREADS), '-c', String(CONCURRENCY)], {
    encoding: 'utf8',
    timeout: (SECS + 60) * 1000,
  });
  const out = (r.stdout ?? '') + (r.stderr ?? '');
  const tps = /TPS: (\d+)/.exec(out);
  const gets = /cmd_get: (\d+)/.exec(out);
  const sets = /cmd_set: (\d+)/.exec(out);
  const misses = /get_misses: (\d+)/.exec(out);
  const errors = out.split('\n').filter((l) => /^(Invalid magic|Unknown command|Not found|Invalid arguments|Out of memory|Too large\.|Not stored\.|Unknown error)/.test(l)).length;
  if (!tps) throw new Error(`memaslap against ${ip}: ${out}`);
  return { tps: Number(tps[1]), gets: Number(gets?.[1] ?? 0), sets: Number(sets?.[1] ?? 0), misses: Number(misses?.[1] ?? 0), errors };
}

const peers = { server: '10.62.10.2', direct: '10.62.11.2', linux: '10.62.12.2' };
const runs = { server: [], direct: [], linux: [] };
for (let i = 0; i < ROUNDS; i++) {
  for (const who of Object.keys(peers)) runs[who].push(memaslap(peers[who]));
  console.log(`round ${i + 1}/${ROUNDS}: ${Object.keys(peers).map((w) => `${w} ${runs[w][i].tps} ops/s`).join(', ')}`);
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const v = Object.fromEntries(Object.keys(peers).map((w) => [w, median(runs[w].map((r) => r.tps))]));
const bad = Object.fromEntries(Object.keys(peers).map((w) => [w, runs[w].reduce((n, r) => n + r.errors, 0)]));

console.log(`\nmemaslap -B, ${THREADS} threads, ${CONCURRENCY} connections, 64 B keys, 1 KiB values, SET:GET 1:10, ${SECS} s x ${ROUNDS} (medians)`);
console.log(`${'server'.padStart(12)} ${'direct'.padStart(12)} ${'Linux'.padStart(12)} ${'srv/Linux'.padStart(10)} ${'dir/Linux'.padStart(10)} ${'srv/dir'.padStart(8)}`);
console.log(
  `${`${v.server}`.padStart(8)} op/s ${`${v.direct}`.padStart(8)} op/s ${`${v.linux}`.padStart(8)} op/s ${(v.server / v.linux).toFixed(3).padStart(10)} ${(v.direct / v.linux).toFixed(3).padStart(10)} ${(v.server / v.direct).toFixed(3).padStart(8)}`,
);
console.log(`error replies seen by memaslap: server ${bad.server}, direct ${bad.direct}, Linux ${bad.linux}`);

const figures = [];
for (const w of Object.keys(peers)) figures.push({ name: `mc.${w}.ops`, value: v[w], unit: 'ops/s' }, { name: `mc.${w}.errors`, value: bad[w], unit: 'replies' });
figures.push({ name: 'mc.ratio.server-over-linux', value: v.server / v.linux, unit: 'ratio' });
figures.push({ name: 'mc.ratio.direct-over-linux', value: v.direct / v.linux, unit: 'ratio' });
figures.push({ name: 'mc.ratio.server-over-direct', value: v.server / v.direct, unit: 'ratio' });
mkdirSync(join(root, 'bench/results'), { recursive: true });
writeFileSync(join(root, 'bench/results/mc.json'), JSON.stringify(figures, null, 2) + '\n');
mkdirSync(join(root, 'docs/plots'), { recursive: true });
writeFileSync(
  join(root, 'docs/plots/mc.svg'),
  barChart({
    title: 'memaslap -B, SET:GET 1:10, 1 KiB values: operations/s',
    yLabel: 'ops/s',
    bars: [
      { label: 'libretto server (TAP)', value: v.server },
      { label: 'libretto direct (TAP)', value: v.direct },
      { label: 'Linux memcached (veth)', value: v.linux },
    ],
  }),
);
console.log('wrote bench/results/mc.json, docs/plots/mc.svg');
process.exit(0);
