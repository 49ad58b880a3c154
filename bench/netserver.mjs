// The network server in TypeScript (both engines) against the network
// server in Rust (`make bench`):
//
// 1. `bin/libretto netbench`: each server alone on the host's rings, driven
//    by the Rust load generator (components/loadgen-rs): server CPU per
//    frame and frame rate with one burst in flight, and the highest offered
//    rate without a drop, at bursts of 1, 16, 64 and 256 frames of 64 and
//    1500 bytes (bench/results/netserver.json).
// 2. As root, end to end: the httpd and kv images on the shared IP of a TAP
//    NIC behind each server in turn; wrk against httpd and redis-benchmark
//    against kv from Linux (bench/results/netserver-e2e.json).
//
// usage: node bench/netserver.mjs   (NETSERVER_E2E_SECS=wrk seconds, default 10;
//                                    NETSERVER_E2E_N=redis-benchmark requests, default 50000)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BIN = join(root, 'bin/libretto');
const comps = join(root, 'build/components');
const out = join(root, 'bench/results');
mkdirSync(out, { recursive: true });

const r = spawnSync(BIN, ['netbench', '--components', comps, '--out', out], { stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);

const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
if (process.getuid?.() !== 0) {
  console.log('bench/netserver.mjs: end to end skipped: needs root for a TAP device (run make bench as root)');
  process.exit(0);
}
const SECS = Number(process.env.NETSERVER_E2E_SECS ?? 10);
const N = Number(process.env.NETSERVER_E2E_N ?? 50000);
const TAP = 'lrsb0';
const NET = '10.63.2';
const sh = (cmd) => spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
const cleanup = () => sh(`ip link del ${TAP} 2>/dev/null`);
cleanup();
const made = sh(`ip tuntap add dev ${TAP} mode tap && ip addr add ${NET}.1/24 dev ${TAP} && ip link set ${TAP} up`);
if (made.status !== 0) throw new Error(made.stderr);
const procs = [];
process.on('exit', () => {
  for (const p of procs) p.kill('SIGKILL');
  cleanup();
});

const dir = mkdtempSync(join(tmpdir(), 'libretto-nsbench-'));
const kv = existsSync(join(root, 'build/images/kv.wasm'));
const servers = [
  ['typescript/quickjs', join(comps, 'network-server.quickjs.wasm')],
  ['typescript/starlingmonkey', join(comps, 'network-server.starlingmonkey.wasm')],
  ['rust', join(comps, 'network-server-rs.wasm')],
];

async function system(server) {
  const manifest = join(dir, 'system.json');
  const apps = [{ name: 'web', image: join(root, 'build/images/httpd.wasm'), ports: { tcp: [80] }, args: { port: 80 } }];
  if (kv) apps.push({ name: 'kv', image: join(root, 'build/images/kv.wasm'), ports: { tcp: [6379] }, args: { port: 6379 } });
  writeFileSync(manifest, JSON.stringify({ name: 'lrs-bench', control: join(dir, 'ctl.sock'), nic: { tap: TAP, mac: '02:00:00:00:63:21' }, shared_ip: `${NET}.2/24`, network_server: server, apps }));
  const p = spawn(BIN, ['run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(p);
  let text = '';
  p.stdout.on('data', (d) => (text += d));
  p.stderr.on('data', (d) => (text += d));
  const t0 = Date.now();
  while (!/httpd: listening on port 80/.test(text) || (kv && !/kv: listening on port 6379/.test(text))) {
    if (Date.now() - t0 > 60_000) throw new Error(`the system did not come up:\n${text}`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
  await new Promise((ok) => setTimeout(ok, 500));
  return {
    async stop() {
      p.kill('SIGTERM');
      await new Promise((ok) => {
        p.on('close', ok);
        setTimeout(ok, 10_000);
      });
    },
  };
}

function wrk(url) {
  const w = spawnSync('wrk', ['-t2', '-c16', `-d${SECS}s`, url], { encoding: 'utf8', timeout: (SECS + 30) * 1000 });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(w.stdout)?.[1] ?? NaN);
  const errors = /Socket errors|Non-2xx/.test(w.stdout);
  return { rps, errors };
}

function redis(extra) {
  const b = spawnSync('redis-benchmark', ['-h', `${NET}.2`, '-p', '6379', '-t', 'set,get', '-n', String(N), '-c', '50', '-q', ...extra], { encoding: 'utf8', timeout: 600_000 });
  const get = (t) => Number(new RegExp(`${t}: ([\\d.]+) requests per second`).exec(b.stdout)?.[1] ?? NaN);
  return { set: get('SET'), get: get('GET') };
}

const rows = [];
for (const [name, path] of servers) {
  console.log(`netserver e2e: ${name} ...`);
  const sys = await system(path);
  try {
    const row = { server: name };
    if (has('wrk')) {
      const small = wrk(`http://${NET}.2/4k`);
      const big = wrk(`http://${NET}.2/128k`);
      Object.assign(row, { wrk_4k_rps: small.rps, wrk_128k_rps: big.rps, wrk_errors: small.errors || big.errors });
    }
    if (kv && has('redis-benchmark')) {
      const plain = redis([]);
      const piped = redis(['-P', '16']);
      Object.assign(row, { redis_set_rps: plain.set, redis_get_rps: plain.get, redis_set_p16_rps: piped.set, redis_get_p16_rps: piped.get });
    }
    rows.push(row);
  } finally {
    await sys.stop();
  }
}
const cell = (v) => (typeof v === 'number' && !Number.isNaN(v) ? v.toFixed(0) : '-');
console.log('\nend to end over TAP (apps on the shared IP behind each network server), requests/s');
console.log(`${'server'.padEnd(27)} ${'wrk 4k'.padStart(9)} ${'wrk 128k'.padStart(9)} ${'redis SET'.padStart(10)} ${'redis GET'.padStart(10)} ${'SET -P16'.padStart(10)} ${'GET -P16'.padStart(10)}`);
for (const r of rows) {
  console.log(`${r.server.padEnd(27)} ${cell(r.wrk_4k_rps).padStart(9)} ${cell(r.wrk_128k_rps).padStart(9)} ${cell(r.redis_set_rps).padStart(10)} ${cell(r.redis_get_rps).padStart(10)} ${cell(r.redis_set_p16_rps).padStart(10)} ${cell(r.redis_get_p16_rps).padStart(10)}${r.wrk_errors ? '  (wrk saw errors)' : ''}`);
}
writeFileSync(join(out, 'netserver-e2e.json'), JSON.stringify(rows, null, 2) + '\n');
console.log(`wrote ${join(out, 'netserver-e2e.json')}`);
