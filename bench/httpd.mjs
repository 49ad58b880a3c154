// The HTTP benchmark (as root): Debian's wrk from the host's network stack
// against three servers of the same files (4 KiB to 128 KiB, keep-alive),
// reached the same way, in one run:
//
//   server  - the httpd image with an IP of its own behind the network
//             server on a TAP NIC (libretto run MANIFEST): the multiserver
//             path
//   direct  - the same app after `ctl switch web direct`: on a TAP device
//             of its own on the same Linux bridge, the library-OS path
//   nginx   - Debian's nginx in a network namespace over a veth pair,
//             sendfile and keep-alive, with one worker (to match httpd's
//             one app thread) and with `worker_processes auto`
//
// At concurrency 1, 10, 30 and 60 (wrk -t min(c, 2)) for each size;
// points are interleaved (every server at one point before the next
// point), so a change of load on the machine falls on all of them.
// Prints requests/s, transfer rate, mean latency and the ratios
// httpd/nginx; the CPU each server's threads used per request; writes
// bench/results/httpd.json and docs/plots/httpd-<size>.svg (requests/s
// against concurrency, one line per server). Skips cleanly without root,
// wrk or nginx. Removes what it made, even on failure.
//
// usage: node bench/httpd.mjs [--quick]
//   LIBRETTO_BENCH_SECONDS  per wrk point (default 3; 2 with --quick)
//   LIBRETTO_BENCH_SIZES    sizes in KiB (default 4,16,64,128; 4,128 with --quick)
//   LIBRETTO_BENCH_ROUNDS   rounds; each point keeps its best round (default 1)
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { lineChart } from './svg.mjs';
import { sh, has, started, nginxConf } from './lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const quick = process.argv.includes('--quick');
const SECS = Number(process.env.LIBRETTO_BENCH_SECONDS ?? (quick ? 2 : 3));
const SIZES = (process.env.LIBRETTO_BENCH_SIZES ?? (quick ? '4,128' : '4,16,64,128')).split(',').map(Number);
const ROUNDS = Number(process.env.LIBRETTO_BENCH_ROUNDS ?? 1);
const CONCURRENCY = [1, 10, 30, 60];

if (process.getuid?.() !== 0) {
  console.log('bench/httpd.mjs: skipped: needs root for TAP devices, a bridge and a veth pair (run make bench as root)');
  process.exit(0);
}
for (const [tool, pkg] of [
  ['wrk', 'wrk'],
  ['nginx', 'nginx-light'],
  ['ip', 'iproute2'],
]) {
  if (!has(tool)) {
    console.log(`bench/httpd.mjs: skipped: needs ${tool} (apt-get install ${pkg})`);
    process.exit(0);
  }
}
for (const f of ['build/images/httpd.wasm', 'build/components/network-server.wasm', 'bin/libretto']) {
  if (!existsSync(join(root, f))) {
    console.log(`bench/httpd.mjs: skipped: ${f} is missing (make build components images)`);
    process.exit(0);
  }
}

// Names and addresses of this benchmark only: lhtb*, 10.65.10-12.x.
const BR = 'lhtbbr';
const NIC = 'lhtbn0';
const OWN = 'lhtbd0';
const NS = 'lhtbpeer';
const cleanup = () => sh(`ip link del ${NIC} 2>/dev/null; ip link del ${OWN} 2>/dev/null; ip link del ${BR} 2>/dev/null; ip netns del ${NS} 2>/dev/null; ip link del lhtbv0 2>/dev/null`, true);

/** Child processes of `pid` (nginx's workers). */
function children(pid) {
  const out = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

const procs = [];
const nginxes = [];
function stopAll() {
  for (const p of procs) p.kill('SIGKILL');
  for (const n of nginxes) {
    if (n.exitCode !== null || n.signalCode !== null) continue;
    const workers = children(n.pid);
    n.kill('SIGTERM');
    for (let i = 0; i < 20 && existsSync(`/proc/${n.pid}/stat`) && !/\) Z /.test(readFileSync(`/proc/${n.pid}/stat`, 'utf8')); i++) spawnSync('sleep', ['0.05']);
    for (const w of workers) {
      try {
        process.kill(w, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    n.kill('SIGKILL');
  }
}
cleanup();
process.on('exit', () => {
  stopAll();
  cleanup();
});
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const dir = mkdtempSync(join(tmpdir(), 'libretto-httpd-bench-'));
chmodSync(dir, 0o755);

// server and direct: one httpd app with its own IP on a bridge that joins
// the system's NIC and the app's own NIC; Linux at .1.
sh(`ip link add ${BR} type bridge && ip addr add 10.65.10.1/24 dev ${BR} && ip link set ${BR} up`);
for (const d of [NIC, OWN]) sh(`ip tuntap add dev ${d} mode tap && ip link set ${d} master ${BR} && ip link set ${d} up`);
const manifest = join(dir, 'httpd.json');
writeFileSync(
  manifest,
  JSON.stringify({
    name: 'httpd-bench',
    control: join(dir, 'ctl.sock'),
    nic: { tap: NIC, mac: '02:00:00:00:65:a1' },
    shared_ip: '10.65.10.2/24',
    network_server: join(root, 'build/components/network-server.wasm'),
    apps: [{ name: 'web', image: join(root, 'build/images/httpd.wasm'), ip: '10.65.10.3/24', direct: { tap: OWN }, args: { port: 80 } }],
  }),
);
const sys = spawn(join(root, 'bin/libretto'), ['run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
procs.push(sys);
let sysOut = '';
sys.stdout.on('data', (d) => (sysOut += d));
sys.stderr.on('data', (d) => (sysOut += d));
await started(sys, /httpd: listening on port 80/, 'the system');
function ctl(...args) {
  const r = spawnSync(join(root, 'bin/libretto'), ['ctl', '--manifest', manifest, ...args], { encoding: 'utf8', timeout: 90_000 });
  if (r.status !== 0) throw new Error(`ctl ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}
let mode = 'server';
function switchTo(to) {
  if (mode === to) return;
  const r = ctl('switch', 'web', to);
  if (!new RegExp(`switched to ${to} mode`).test(r)) throw new Error(`ctl switch web ${to}: ${r}`);
  mode = to;
}

// nginx: the same files (a..z repeated, as httpd makes them) in a namespace over veth.
sh(`ip netns add ${NS} && ip link add lhtbv0 type veth peer name lhtbv1 && ip link set lhtbv1 netns ${NS}`);
sh('ip addr add 10.65.12.1/24 dev lhtbv0 && ip link set lhtbv0 up');
sh(`ip -n ${NS} addr add 10.65.12.2/24 dev lhtbv1 && ip -n ${NS} link set lhtbv1 up && ip -n ${NS} link set lo up`);
const www = join(dir, 'www');
mkdirSync(www);
chmodSync(www, 0o755);
for (const k of [4, 8, 16, 32, 64, 128]) {
  const b = Buffer.alloc(k * 1024);
  for (let i = 0; i < b.length; i++) b[i] = 97 + (i % 26);
  writeFileSync(join(www, `${k}k`), b, { mode: 0o644 });
}
function nginx(name, port, workers) {
  const d = join(dir, name);
  mkdirSync(d);
  const conf = join(d, 'nginx.conf');
  writeFileSync(
    conf,
    nginxConf({ dir: d, workers, listen: `10.65.12.2:${port}`, root: www, errorLog: `${d}/error.log` }),
  );
  const p = spawn('ip', ['netns', 'exec', NS, 'nginx', '-e', `${d}/error.log`, '-p', d, '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  nginxes.push(p);
  let err = '';
  p.stderr.on('data', (x) => (err += x));
  return { proc: p, err: () => err + (existsSync(`${d}/error.log`) ? readFileSync(`${d}/error.log`, 'utf8') : '') };
}
const ngx1 = nginx('nginx-1', 80, 1);
const ngxAuto = nginx('nginx-auto', 8080, 'auto');
async function reachable(host, port) {
  for (let i = 0; i < 100; i++) {
    if (sh(`curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://${host}:${port}/4k`, true).trim() === '200') return;
    await sleep(100);
  }
  throw new Error(`nothing answers on ${host}:${port}: ${port === 80 ? ngx1.err() : ngxAuto.err()}`);
}
await reachable('10.65.12.2', 80);
await reachable('10.65.12.2', 8080);
await reachable('10.65.10.3', 80);

// Every server serves every size whole.
for (const [host, port] of [
  ['10.65.10.3', 80],
  ['10.65.12.2', 80],
  ['10.65.12.2', 8080],
]) {
  for (const k of SIZES) {
    const got = sh(`curl -s --max-time 10 http://${host}:${port}/${k}k | sha256sum`);
    const want = sh(`sha256sum < ${join(www, `${k}k`)}`);
    if (got !== want) throw new Error(`http://${host}:${port}/${k}k does not match the file`);
  }
}

// ---- measuring ---------------------------------------------------------------

/** CPU time (s) of a set of threads or processes, from /proc. */
function cpuOf(paths) {
  let ticks = 0;
  for (const p of paths) {
    try {
      const stat = readFileSync(p, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // gone
    }
  }
  return ticks / 100;
}
/** libretto's threads by name: the app's, the network server's, the TAP readers' and writers'. */
function sysThreads() {
  const out = {};
  for (const t of readdirSync(`/proc/${sys.pid}/task`)) {
    const name = readFileSync(`/proc/${sys.pid}/task/${t}/comm`, 'utf8').trim();
    (out[name] ??= []).push(`/proc/${sys.pid}/task/${t}/stat`);
  }
  return out;
}
function nginxProcs(n) {
  return [n.proc.pid, ...children(n.proc.pid)].map((p) => `/proc/${p}/stat`);
}

const UNITS = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 };
const TIME = { us: 1e-3, ms: 1, s: 1000, m: 60000 };
function wrk(url, conns, secs) {
  const args = [`-t${Math.min(conns, 2)}`, `-c${conns}`, `-d${secs}s`, '--timeout', '10s', url];
  const r = spawnSync('wrk', args, { encoding: 'utf8', timeout: (secs + 60) * 1000 });
  const out = (r.stdout ?? '') + (r.stderr ?? '');
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const tr = /Transfer\/sec:\s+([\d.]+)([KMGT]?B)/.exec(out);
  const lat = /Latency\s+([\d.]+)(us|ms|s|m)\b/.exec(out);
  const n = /(\d+) requests in/.exec(out);
  if (!rps || !tr || !n) throw new Error(`wrk ${args.join(' ')}: ${out}`);
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return {
    rps: Number(rps[1]),
    mibps: (Number(tr[1]) * UNITS[tr[2]]) / 1024 ** 2,
    latencyMs: lat ? Number(lat[1]) * TIME[lat[2]] : NaN,
    requests: Number(n[1]),
    socketErrors: se ? se.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
    non2xx: non2xx ? Number(non2xx[1]) : 0,
  };
}

const servers = [
  { key: 'server', label: 'httpd, server mode (TAP)', url: 'http://10.65.10.3:80', mode: 'server' },
  { key: 'direct', label: 'httpd, direct mode (TAP)', url: 'http://10.65.10.3:80', mode: 'direct' },
  { key: 'nginx1', label: 'nginx, 1 worker (veth)', url: 'http://10.65.12.2:80', nginx: ngx1 },
  { key: 'nginxAuto', label: 'nginx, auto workers (veth)', url: 'http://10.65.12.2:8080', nginx: ngxAuto },
];
// Order within a point: server mode, the nginxes, then direct (one switch
// there and one back per point).
const order = ['server', 'nginx1', 'nginxAuto', 'direct'].map((k) => servers.find((s) => s.key === k));

// Warm up every path (ARP, the bridge's tables, nginx's file cache).
for (const s of order) {
  if (s.mode) switchTo(s.mode);
  wrk(`${s.url}/4k`, 10, 1);
}
switchTo('server');

const res = {}; // res[key][size][conns]: the best round's wrk figures
const cpu = {}; // cpu[key][size][conns]: { thread: { usPerReq, core } } of that round
let errors = 0; // socket errors + non-2xx, every round
const t0 = Date.now();
console.log(`wrk -t min(c,2) -c C -d ${SECS}s, keep-alive; sizes ${SIZES.map((k) => `${k}k`).join(' ')}; concurrency ${CONCURRENCY.join(' ')}; best of ${ROUNDS} round(s)`);
for (let round = 1; round <= ROUNDS; round++) {
  for (const k of SIZES) {
    for (const c of CONCURRENCY) {
      const line = [];
      for (const s of order) {
        if (s.mode) switchTo(s.mode);
        const paths = s.nginx ? { nginx: nginxProcs(s.nginx) } : sysThreads();
        const before = Object.fromEntries(Object.entries(paths).map(([n, ps]) => [n, cpuOf(ps)]));
        const r = wrk(`${s.url}/${k}k`, c, SECS);
        const used = Object.fromEntries(Object.entries(paths).map(([n, ps]) => [n, cpuOf(ps) - before[n]]));
        errors += r.socketErrors + r.non2xx;
        // CPU per request (us) of each busy thread, and its share of one core.
        const threads = {};
        for (const [n, secs] of Object.entries(used)) if (secs > 0.02 * SECS) threads[n] = { usPerReq: (secs * 1e6) / Math.max(1, r.requests), core: secs / SECS };
        const best = (res[s.key] ??= {})[k] ??= {};
        if (!best[c] || r.rps > best[c].rps) {
          best[c] = r;
          ((cpu[s.key] ??= {})[k] ??= {})[c] = threads;
        }
        line.push(`${s.key} ${r.rps.toFixed(0)}${r.socketErrors || r.non2xx ? ` (ERRORS: ${r.socketErrors} socket, ${r.non2xx} non-2xx)` : ''}`);
      }
      console.log(`  ${ROUNDS > 1 ? `round ${round} ` : ''}/${k}k c=${String(c).padEnd(2)} req/s: ${line.join(', ')}`);
    }
  }
}
switchTo('server');
const elapsed = (Date.now() - t0) / 1000;
const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

// ---- reporting ---------------------------------------------------------------

const fmt = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
console.log(`\nrequests/s (transfer MiB/s) and httpd/nginx ratios; ${elapsed.toFixed(0)} s, load average at the end ${load}`);
console.log(
  `${'size'.padEnd(6)}${'c'.padStart(3)}  ${'server'.padStart(15)} ${'direct'.padStart(15)} ${'nginx 1w'.padStart(16)} ${'nginx auto'.padStart(16)}  ${'srv/ngx1'.padStart(8)} ${'dir/ngx1'.padStart(8)} ${'dir/auto'.padStart(8)}`,
);
const figures = [];
for (const k of SIZES) {
  for (const c of CONCURRENCY) {
    const v = Object.fromEntries(servers.map((s) => [s.key, res[s.key][k][c]]));
    const cell = (r) => `${r.rps.toFixed(0)} (${fmt(r.mibps)})`;
    console.log(
      `${`${k}k`.padEnd(6)}${String(c).padStart(3)}  ${cell(v.server).padStart(15)} ${cell(v.direct).padStart(15)} ${cell(v.nginx1).padStart(16)} ${cell(v.nginxAuto).padStart(16)}  ${(v.server.rps / v.nginx1.rps).toFixed(3).padStart(8)} ${(v.direct.rps / v.nginx1.rps).toFixed(3).padStart(8)} ${(v.direct.rps / v.nginxAuto.rps).toFixed(3).padStart(8)}`,
    );
    for (const s of servers) {
      const r = v[s.key];
      const p = `httpd.${k}k.c${c}.${s.key}`;
      figures.push({ name: `${p}.rps`, value: r.rps, unit: 'req/s' }, { name: `${p}.transfer`, value: r.mibps, unit: 'MiB/s' }, { name: `${p}.latency`, value: r.latencyMs, unit: 'ms (mean)' });
      figures.push({ name: `${p}.errors`, value: r.socketErrors + r.non2xx, unit: 'socket errors + non-2xx' });
      for (const [n, t] of Object.entries(cpu[s.key][k][c])) figures.push({ name: `${p}.cpu.${n}`, value: t.usPerReq, unit: `us CPU per request (${(t.core * 100).toFixed(0)}% of a core)` });
    }
    figures.push({ name: `httpd.${k}k.c${c}.ratio.server-over-nginx1`, value: v.server.rps / v.nginx1.rps, unit: 'ratio' });
    figures.push({ name: `httpd.${k}k.c${c}.ratio.direct-over-nginx1`, value: v.direct.rps / v.nginx1.rps, unit: 'ratio' });
    figures.push({ name: `httpd.${k}k.c${c}.ratio.server-over-nginxAuto`, value: v.server.rps / v.nginxAuto.rps, unit: 'ratio' });
    figures.push({ name: `httpd.${k}k.c${c}.ratio.direct-over-nginxAuto`, value: v.direct.rps / v.nginxAuto.rps, unit: 'ratio' });
  }
}
console.log(`socket errors + non-2xx over all runs: ${errors}`);

// Where the CPU went at the highest concurrency: per request, per thread.
console.log(`\nCPU per request (us) at c=${CONCURRENCY.at(-1)}, busy threads (share of one core):`);
for (const k of SIZES) {
  for (const s of servers) {
    const t = cpu[s.key][k][CONCURRENCY.at(-1)];
    console.log(`  /${k}k ${s.key.padEnd(9)} ${Object.entries(t).sort((a, b) => b[1].usPerReq - a[1].usPerReq).map(([n, x]) => `${n} ${x.usPerReq.toFixed(0)} (${(x.core * 100).toFixed(0)}%)`).join(', ')}`);
  }
}
// CPU per request of the thread that does a server's work (httpd: the app
// thread, which runs httpd, the POSIX shim and the TCP/IP stack; nginx: its
// processes), median over the concurrencies: unlike requests/s, it hardly
// moves with the machine's load.
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log('\nCPU per request (us), the app thread (httpd) or all processes (nginx), median over concurrency; requests per CPU-second:');
for (const k of SIZES) {
  const us = {};
  for (const s of servers) us[s.key] = median(CONCURRENCY.map((c) => cpu[s.key][k][c][s.nginx ? 'nginx' : 'web']?.usPerReq ?? NaN));
  console.log(`  /${k}k ${servers.map((s) => `${s.key} ${us[s.key].toFixed(0)} us (${(1e6 / us[s.key]).toFixed(0)}/s)`).join(', ')}; nginx1/server ${(us.nginx1 / us.server).toFixed(3)}, nginx1/direct ${(us.nginx1 / us.direct).toFixed(3)}`);
  for (const s of servers) figures.push({ name: `httpd.${k}k.cpu-per-request.${s.key}`, value: us[s.key], unit: 'us (median over concurrency)' });
  figures.push({ name: `httpd.${k}k.cpu-ratio.nginx1-over-server`, value: us.nginx1 / us.server, unit: 'ratio (requests per CPU-second, httpd/nginx)' });
  figures.push({ name: `httpd.${k}k.cpu-ratio.nginx1-over-direct`, value: us.nginx1 / us.direct, unit: 'ratio (requests per CPU-second, httpd/nginx)' });
}
figures.push({ name: 'httpd.errors', value: errors, unit: 'socket errors + non-2xx' });
figures.push({ name: 'httpd.load-average', value: Number(load.split(' ')[0]), unit: 'load average (1 min) at the end, 2 cores' });

mkdirSync(join(root, 'bench/results'), { recursive: true });
writeFileSync(join(root, 'bench/results/httpd.json'), JSON.stringify(figures, null, 2) + '\n');
mkdirSync(join(root, 'docs/plots'), { recursive: true });
const plots = [];
for (const k of SIZES) {
  const file = `docs/plots/httpd-${k}k.svg`;
  writeFileSync(
    join(root, file),
    lineChart({
      title: `wrk, GET /${k}k, keep-alive: requests/s against connections`,
      xLabel: 'connections (wrk -c)',
      yLabel: 'requests/s',
      series: servers.map((s) => ({ name: s.label, points: CONCURRENCY.map((c) => [c, res[s.key][k][c].rps]) })),
    }),
  );
  plots.push(file);
}
console.log(`wrote bench/results/httpd.json, ${plots.join(', ')}`);
// nginx stops on SIGTERM and reaps its workers; the exit handler catches the rest.
await Promise.all(nginxes.map((n) => Promise.race([new Promise((r) => (n.once('exit', r), n.kill('SIGTERM'))), sleep(5000)])));
if (/\[web\].*(trap|panic|crashed)/i.test(sysOut)) console.log(`the httpd app reported a failure:\n${sysOut.slice(-2000)}`);
process.exit(0);
