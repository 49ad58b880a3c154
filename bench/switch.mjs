// The dynamic-switch benchmark (`make bench`, as root): two httpd images,
// each with its own IP and a NIC of its own, behind one network server on
// a bridge of TAP devices. A load of 8 connections per app records
// requests per 100 ms while the apps move: both in server mode, then app A
// direct (a 50/50 mix), then both direct, then both back. Then the
// recovery figures: the longest gap in service after killing, hanging,
// crashing and hot-swapping the network server. Writes
// bench/results/switch.json and docs/plots/switch-throughput.svg and
// docs/plots/recovery.svg.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import http from 'node:http';
import { barChart, lineChart } from './svg.mjs';
import { sh } from './lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
if (process.getuid?.() !== 0) {
  console.log('bench/switch.mjs: skipped: needs root for TAP devices and a bridge (run make bench as root)');
  process.exit(0);
}
const devs = ['lbbn0', 'lbbda', 'lbbdb'];
const cleanup = () => sh(`${devs.map((d) => `ip link del ${d} 2>/dev/null;`).join(' ')} ip link del lbbbr 2>/dev/null`, true);
cleanup();
const procs = [];
process.on('exit', () => {
  for (const p of procs) p.kill('SIGKILL');
  cleanup();
});
sh('ip link add lbbbr type bridge && ip addr add 10.88.0.1/24 dev lbbbr && ip link set lbbbr up');
for (const d of devs) sh(`ip tuntap add dev ${d} mode tap && ip link set ${d} master lbbbr && ip link set ${d} up`);

const dir = mkdtempSync(join(tmpdir(), 'libretto-switch-bench-'));
const manifest = join(dir, 'm.json');
writeFileSync(
  manifest,
  JSON.stringify({
    name: 'switch-bench',
    control: join(dir, 'ctl.sock'),
    nic: { tap: 'lbbn0', mac: '02:00:00:00:88:01' },
    shared_ip: '10.88.0.2/24',
    network_server: join(root, 'build/components/network-server.wasm'),
    apps: [
      { name: 'a', image: join(root, 'build/images/httpd.wasm'), ip: '10.88.0.3/24', direct: { tap: 'lbbda' }, args: { port: 80 } },
      { name: 'b', image: join(root, 'build/images/httpd.wasm'), ip: '10.88.0.4/24', direct: { tap: 'lbbdb' }, args: { port: 80 } },
    ],
  }),
);
const sys = spawn(join(root, 'bin/libretto'), ['run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
procs.push(sys);
let out = '';
sys.stdout.on('data', (d) => (out += d));
sys.stderr.on('data', (d) => (out += d));
for (const t0 = Date.now(); (out.match(/httpd: listening/g) ?? []).length < 2; ) {
  if (Date.now() - t0 > 60_000) throw new Error(`the system did not come up: ${out}`);
  await new Promise((r) => setTimeout(r, 100));
}
const ctl = (...args) => spawnSync(join(root, 'bin/libretto'), ['ctl', '--manifest', manifest, ...args], { encoding: 'utf8' }).stdout.trim();

/** Keep `conns` keep-alive connections busy with GET /4k; count completions per 100 ms. */
function load(host, conns) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: conns });
  const buckets = new Map();
  let stop = false;
  let errors = 0;
  const one = () =>
    new Promise((resolveOne) => {
      const req = http.get({ host, path: '/4k', agent, timeout: 10_000 }, (res) => {
        res.resume();
        res.on('end', () => {
          const b = Math.floor(Date.now() / 100);
          buckets.set(b, (buckets.get(b) ?? 0) + 1);
          resolveOne();
        });
      });
      req.on('error', () => {
        errors++;
        resolveOne();
      });
      req.on('timeout', () => req.destroy());
    });
  const workers = Array.from({ length: conns }, async () => {
    while (!stop) await one();
  });
  return {
    buckets,
    get errors() {
      return errors;
    },
    async end() {
      stop = true;
      await Promise.all(workers);
      agent.destroy();
    },
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const la = load('10.88.0.3', 8);
const lb = load('10.88.0.4', 8);
const start = Date.now();
const marks = [];
const at = (label) => marks.push({ x: (Date.now() - start) / 1000, label });
await sleep(5000);
at('A direct');
ctl('switch', 'a', 'direct');
await sleep(5000);
at('B direct');
ctl('switch', 'b', 'direct');
await sleep(5000);
at('both server');
ctl('switch', 'a', 'server');
ctl('switch', 'b', 'server');
await sleep(5000);
await la.end();
await lb.end();
const series = (l) => {
  const keys = [...l.buckets.keys()].sort((x, y) => x - y);
  const first = Math.floor(start / 100);
  return keys.filter((k) => k >= first).map((k) => [(k - first) / 10, l.buckets.get(k) * 10]);
};
const sa = series(la);
const sb = series(lb);
const mean = (s, from, to) => {
  const xs = s.filter((p) => p[0] >= from && p[0] < to).map((p) => p[1]);
  return xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
};
const phases = [
  ['both server', 0.5, 5],
  ['A direct, B server', 5.5, 10],
  ['both direct', 10.5, 15],
  ['both server again', 15.5, 20],
];
console.log(`\nrequests/s per app (8 connections each, GET /4k), errors: A ${la.errors}, B ${lb.errors}`);
const figures = [];
for (const [name, from, to] of phases) {
  const a = mean(sa, from, to);
  const b = mean(sb, from, to);
  console.log(`  ${name.padEnd(20)} A ${a.toFixed(0).padStart(6)}  B ${b.toFixed(0).padStart(6)}  total ${(a + b).toFixed(0).padStart(6)}`);
  figures.push({ name: `switch.${name.replace(/[ ,]+/g, '-')}.a`, value: a, unit: 'req/s' }, { name: `switch.${name.replace(/[ ,]+/g, '-')}.b`, value: b, unit: 'req/s' });
}
figures.push({ name: 'switch.errors', value: la.errors + lb.errors, unit: 'requests' });

// Recovery: the longest gap in service after each event, under the same load on app A.
const probeLoad = load('10.88.0.3', 8);
await sleep(1500);
const recovery = [];
for (const [label, args] of [
  ['kill', ['kill', 'network-server']],
  ['hang', ['fault', 'network-server', 'hang']],
  ['crash', ['fault', 'network-server', 'crash']],
  ['swap', ['swap', 'network-server', join(root, 'build/components/network-server.wasm')]],
]) {
  const t = Math.floor(Date.now() / 100);
  ctl(...args);
  await sleep(3500);
  let gap = 0;
  let last = t;
  for (let k = t; k < t + 30; k++) {
    if (probeLoad.buckets.get(k)) {
      gap = Math.max(gap, (k - last) * 100);
      last = k;
    }
  }
  recovery.push({ label, value: gap });
  figures.push({ name: `recovery.${label}`, value: gap, unit: 'ms (100 ms resolution)' });
}
await probeLoad.end();
console.log(`recovery (longest gap in service, 100 ms buckets): ${recovery.map((r) => `${r.label} ${r.value} ms`).join(', ')}; errors ${probeLoad.errors}`);
figures.push({ name: 'recovery.errors', value: probeLoad.errors, unit: 'requests' });

mkdirSync(join(root, 'bench/results'), { recursive: true });
writeFileSync(join(root, 'bench/results/switch.json'), JSON.stringify(figures, null, 2) + '\n');
writeFileSync(
  join(root, 'docs/plots/switch-throughput.svg'),
  lineChart({ title: 'Dynamic switch: requests/s of two httpd images, 8 connections each', xLabel: 'time (s)', yLabel: 'requests/s', series: [{ name: 'app A', points: sa }, { name: 'app B', points: sb }], marks }),
);
writeFileSync(join(root, 'docs/plots/recovery.svg'), barChart({ title: 'Longest gap in service after an event (ms)', yLabel: 'ms', bars: recovery }));
console.log('wrote bench/results/switch.json, docs/plots/switch-throughput.svg, docs/plots/recovery.svg');
process.exit(0);
