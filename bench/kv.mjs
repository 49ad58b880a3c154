// The kv benchmark (root): Debian's redis-benchmark against the kv image
// (a Redis-protocol store on the POSIX shim and libretto's TCP/IP stack)
// in server mode (behind the network server, on a TAP NIC) and in direct
// mode (the same app switched to a TAP device of its own), and against
// Debian's redis-server in a network namespace over a veth pair, in the
// same run. The paper's Redis figure: requests per second for each
// redis-benchmark test, with and without pipelining, as kv/redis ratios.
//
// usage: node bench/kv.mjs            (KV_BENCH_N=requests per test, default 100000)
// Writes bench/results/kv.json and docs/plots/kv.svg. Skips without root,
// without redis-benchmark; without redis-server it measures kv alone.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { barChart } from './svg.mjs';
import { sh, has } from './lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const N = Number(process.env.KV_BENCH_N ?? 100000);
const TESTS = 'ping,set,get,incr,lpush,lpop,mset';

if (process.getuid?.() !== 0) {
  console.log('bench/kv.mjs: skipped: needs root for TAP devices, a bridge and a network namespace (run make bench as root)');
  process.exit(0);
}
if (!has('redis-benchmark')) {
  console.log('bench/kv.mjs: skipped: needs redis-benchmark (redis-tools, tools/debian-packages.txt)');
  process.exit(0);
}
for (const f of ['build/images/kv.wasm', 'build/components/network-server.wasm', 'bin/libretto']) {
  if (!existsSync(join(root, f))) {
    console.log(`bench/kv.mjs: skipped: ${f} is missing (make build components images)`);
    process.exit(0);
  }
}
const redisServer = ['redis-server', '/usr/bin/redis-server', '/usr/sbin/redis-server'].find((p) => has(p));

const cleanup = () =>
  sh('ip link del lkvbn0 2>/dev/null; ip link del lkvbd0 2>/dev/null; ip link del lkvbbr 2>/dev/null; ip netns del lkvbns 2>/dev/null; ip link del lkvbv0 2>/dev/null', true);
cleanup();
const procs = [];
process.on('exit', () => {
  for (const p of procs) p.kill('SIGKILL');
  cleanup();
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function started(proc, re, what) {
  let out = '';
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${what} did not start: ${out}`)), 90_000);
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

// kv: its own IP and a NIC of its own for direct mode, on a bridge with the system's NIC.
sh('ip link add lkvbbr type bridge && ip addr add 10.61.30.1/24 dev lkvbbr && ip link set lkvbbr up');
for (const d of ['lkvbn0', 'lkvbd0']) sh(`ip tuntap add dev ${d} mode tap && ip link set ${d} master lkvbbr && ip link set ${d} up`);
const dir = mkdtempSync(join(tmpdir(), 'libretto-kv-bench-'));
const manifest = join(dir, 'kv.json');
writeFileSync(
  manifest,
  JSON.stringify({
    name: 'kv-bench',
    control: join(dir, 'ctl.sock'),
    nic: { tap: 'lkvbn0', mac: '02:00:00:00:61:31' },
    shared_ip: '10.61.30.2/24',
    network_server: join(root, 'build/components/network-server.wasm'),
    apps: [{ name: 'kv', image: join(root, 'build/images/kv.wasm'), ip: '10.61.30.3/24', direct: { tap: 'lkvbd0' }, args: { port: 6379 } }],
  }),
);
const sys = spawn(join(root, 'bin/libretto'), ['run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
procs.push(sys);
await started(sys, /kv: listening on port 6379/, 'the kv system');
const ctl = (...args) => spawnSync(join(root, 'bin/libretto'), ['ctl', '--manifest', manifest, ...args], { encoding: 'utf8' }).stdout.trim();

let redisProc = null;
// redis-server: Linux's own, in a namespace over a veth pair.
if (redisServer) {
  sh('ip netns add lkvbns && ip link add lkvbv0 type veth peer name lkvbv1 && ip link set lkvbv1 netns lkvbns');
  sh('ip addr add 10.61.31.1/24 dev lkvbv0 && ip link set lkvbv0 up');
  sh('ip -n lkvbns addr add 10.61.31.2/24 dev lkvbv1 && ip -n lkvbns link set lkvbv1 up && ip -n lkvbns link set lo up');
  redisProc = spawn('ip', ['netns', 'exec', 'lkvbns', redisServer, '--port', '6379', '--bind', '10.61.31.2', '--save', '', '--appendonly', 'no', '--protected-mode', 'no', '--dir', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  procs.push(redisProc);
  await started(redisProc, /Ready to accept connections/, 'redis-server');
} else console.log('bench/kv.mjs: redis-server is not installed (apt-get install redis-server): kv alone');

/** CPU seconds used so far by each thread of `pid`, by thread name, and in all. */
function cpu(pid) {
  const out = { all: 0 };
  const hz = 100;
  for (const tid of sh(`ls /proc/${pid}/task`, true).split(/\s+/).filter(Boolean)) {
    const stat = sh(`cat /proc/${pid}/task/${tid}/stat`, true);
    const m = /^\d+ \((.*)\) (.*)$/.exec(stat.trim());
    if (!m) continue;
    const f = m[2].split(' ');
    const secs = (Number(f[11]) + Number(f[12])) / hz;
    out[m[1]] = (out[m[1]] ?? 0) + secs;
    out.all += secs;
  }
  return out;
}

/** One redis-benchmark run: requests per second by test name. */
function benchmark(host, extra) {
  const r = spawnSync('redis-benchmark', ['-h', host, '-p', '6379', '-t', TESTS, '-n', String(N), '-c', '50', '-q', ...extra], { encoding: 'utf8', timeout: 1_800_000 });
  const out = `${r.stdout}${r.stderr}`;
  if (r.status !== 0 || /Error/.test(out)) throw new Error(`redis-benchmark against ${host} ${extra.join(' ')} failed (${r.status}):\n${out.replace(/\r/g, '\n').split('\n').filter((l) => l && !/rps=/.test(l)).join('\n')}`);
  const rps = {};
  for (const m of out.matchAll(/([A-Z_]+(?: \(10 keys\))?): ([\d.]+) requests per second/g)) rps[m[1].replace(' (10 keys)', '')] = Number(m[2]);
  return rps;
}

const runs = {};
/** CPU time per request (us) of each run: kv's thread (app, POSIX shim, TCP/IP stack), the network server's, redis-server's. */
const costs = {};
const targets = [['kv server', '10.61.30.3', () => ctl('switch', 'kv', 'server'), sys.pid], ['kv direct', '10.61.30.3', () => ctl('switch', 'kv', 'direct'), sys.pid]];
if (redisServer) targets.push(['redis-server', '10.61.31.2', () => {}, redisProc.pid]);
for (const [pipe, extra] of [['', []], [' -P 16', ['-P', '16']]]) {
  for (const [who, host, prepare, pid] of targets) {
    prepare();
    await sleep(300);
    const t0 = Date.now();
    const c0 = cpu(pid);
    runs[who + pipe] = benchmark(host, extra);
    const c1 = cpu(pid);
    const requests = N * Object.keys(runs[who + pipe]).length;
    const per = (k) => ((c1[k] ?? 0) - (c0[k] ?? 0)) * 1e6 / requests;
    costs[who + pipe] = who === 'redis-server' ? { app: per('all'), server: 0 } : { app: per('kv'), server: per('network-server') };
    console.log(`${(who + pipe).padEnd(20)} done in ${((Date.now() - t0) / 1000).toFixed(0)} s; CPU per request: ${costs[who + pipe].app.toFixed(1)} us${costs[who + pipe].server ? ` + network server ${costs[who + pipe].server.toFixed(1)} us` : ''}`);
  }
}

const names = Object.keys(runs['kv server']);
const cols = Object.keys(runs);
console.log(`\nredis-benchmark -n ${N} -c 50, requests/s`);
console.log(`${'test'.padEnd(12)}${cols.map((c) => c.padStart(20)).join('')}`);
for (const t of names) console.log(`${t.padEnd(12)}${cols.map((c) => String(Math.round(runs[c][t] ?? 0)).padStart(20)).join('')}`);
const figures = [];
console.log(`\nCPU time per request (us; all tests): ${cols.map((c) => `${c} ${costs[c].app.toFixed(1)}${costs[c].server ? ` + ${costs[c].server.toFixed(1)}` : ''}`).join(', ')}`);
for (const c of cols) figures.push({ name: `kv.cpu-per-request.${c.replace(/ /g, '-')}`, value: costs[c].app + costs[c].server, unit: 'us' });
for (const c of cols) for (const t of names) figures.push({ name: `kv.${c.replace(/ /g, '-')}.${t}`, value: runs[c][t], unit: 'req/s' });
if (redisServer) {
  console.log('\nratios');
  for (const pipe of ['', ' -P 16']) {
    const line = names.map((t) => {
      const s = runs[`kv server${pipe}`][t] / runs[`redis-server${pipe}`][t];
      const d = runs[`kv direct${pipe}`][t] / runs[`redis-server${pipe}`][t];
      figures.push({ name: `kv.ratio.server-over-redis${pipe.replace(/ /g, '')}.${t}`, value: s, unit: 'ratio' });
      figures.push({ name: `kv.ratio.direct-over-redis${pipe.replace(/ /g, '')}.${t}`, value: d, unit: 'ratio' });
      return `${t} ${s.toFixed(2)}/${d.toFixed(2)}`;
    });
    console.log(`  kv server/redis, kv direct/redis${pipe}: ${line.join(', ')}`);
  }
}
mkdirSync(join(root, 'bench/results'), { recursive: true });
writeFileSync(join(root, 'bench/results/kv.json'), JSON.stringify(figures, null, 2) + '\n');
mkdirSync(join(root, 'docs/plots'), { recursive: true });
const short = (t) => t.replace('PING_', 'P_').slice(0, 7);
writeFileSync(
  join(root, 'docs/plots/kv.svg'),
  redisServer
    ? barChart({
        title: 'kv as % of redis-server\'s requests/s (redis-benchmark -c 50; s: kv server mode, d: direct; no -P, then -P 16)',
        yLabel: '% of redis-server',
        width: 80 + 44 * names.length * 4,
        bars: ['', ' -P 16'].flatMap((pipe) =>
          names.flatMap((t) =>
            ['server', 'direct'].map((m) => ({ label: `${short(t)} ${m[0]}${pipe ? 'P' : ''}`, value: (100 * runs[`kv ${m}${pipe}`][t]) / runs[`redis-server${pipe}`][t] })),
          ),
        ),
      })
    : barChart({
        title: 'kv requests/s (redis-benchmark -c 50 -P 16; s: server mode, d: direct)',
        yLabel: 'requests/s',
        width: 80 + 52 * names.length * 2,
        bars: names.flatMap((t) => ['server', 'direct'].map((m) => ({ label: `${short(t)} ${m[0]}`, value: runs[`kv ${m} -P 16`][t] }))),
      }),
);
console.log('wrote bench/results/kv.json, docs/plots/kv.svg');
process.exit(0);
