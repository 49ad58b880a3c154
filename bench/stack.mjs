// The TCP/IP stack benchmark (`make bench`, as root): libretto's netapp on
// a TAP device beside Linux on a veth pair, measured in the same run by the
// same client (bench/stack-client.mjs) from the host's network namespace.
//
//   bulk Linux -> peer (upload to discard), bulk peer -> Linux (download
//   from source), and 64-byte ping-pong latency through echo.
//
// Writes bench/results/stack.json (one object per figure: name, value,
// unit) and prints a table with the ratios. Removes every device and
// namespace it made, even on failure.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sh } from './lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BYTES = Number(process.env.LIBRETTO_BENCH_BYTES ?? 512 << 20);
const PINGS = Number(process.env.LIBRETTO_BENCH_PINGS ?? 5000);
const ROUNDS = Number(process.env.LIBRETTO_BENCH_ROUNDS ?? 3);

if (process.getuid?.() !== 0) {
  console.log('bench/stack.mjs: skipped: needs root for the TAP device and the veth pair (run make bench as root)');
  process.exit(0);
}

const cleanup = () => {
  sh('ip link del lbbench0 2>/dev/null; ip netns del lbbench 2>/dev/null; ip link del lbveth0 2>/dev/null', true);
};
cleanup();
const procs = [];
process.on('exit', () => {
  for (const p of procs) p.kill('SIGKILL');
  cleanup();
});

function waitFor(proc, re, what) {
  return new Promise((resolvePromise, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${out}`)), 30_000);
    const on = (d) => {
      out += d;
      if (re.test(out)) {
        clearTimeout(timer);
        resolvePromise();
      }
    };
    proc.stdout.on('data', on);
    proc.stderr.on('data', on);
  });
}

// libretto on a TAP device.
sh('ip tuntap add dev lbbench0 mode tap && ip addr add 10.81.0.1/24 dev lbbench0 && ip link set lbbench0 up');
const appWasm = process.env.LIBRETTO_BENCH_APP ?? join(root, 'build/components/netapp.wasm');
const app = spawn(join(root, 'bin', 'libretto'), ['app', appWasm, '--tap', 'lbbench0',
  'ip=10.81.0.2/24', 'echo=7', 'discard=9', 'source=19', `source-bytes=${BYTES}`], { stdio: ['ignore', 'pipe', 'pipe'] });
procs.push(app);
await waitFor(app, /netapp: 10\.81\.0\.2\/24 on/, 'libretto app');

// Linux on a veth pair, the peer in a namespace of its own.
sh('ip netns add lbbench && ip link add lbveth0 type veth peer name lbveth1 && ip link set lbveth1 netns lbbench');
sh('ip addr add 10.82.0.1/24 dev lbveth0 && ip link set lbveth0 up');
sh('ip -n lbbench addr add 10.82.0.2/24 dev lbveth1 && ip -n lbbench link set lbveth1 up && ip -n lbbench link set lo up');
const peer = spawn('ip', ['netns', 'exec', 'lbbench', process.execPath, join(root, 'bench/linux-peer.mjs'), '10.82.0.2', String(BYTES)], { stdio: ['ignore', 'pipe', 'pipe'] });
procs.push(peer);
await waitFor(peer, /linux-peer:/, 'Linux peer');

function measure(ip) {
  const r = spawnSync(process.execPath, [join(root, 'bench/stack-client.mjs'), ip, String(BYTES), String(PINGS)], { encoding: 'utf8', timeout: 600_000 });
  if (r.status !== 0) throw new Error(`client against ${ip} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const runs = { libretto: [], linux: [] };
for (let i = 0; i < ROUNDS; i++) {
  // Alternate, so drift in the machine's load hits both alike.
  runs.libretto.push(measure('10.81.0.2'));
  runs.linux.push(measure('10.82.0.2'));
  console.log(`round ${i + 1}/${ROUNDS} done`);
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pick = (who, key) => median(runs[who].map((r) => r[key]));

const rows = [
  ['bulk Linux -> peer (upload)', 'uploadBps', 'Gbit/s', 1e9, true],
  ['bulk peer -> Linux (download)', 'downloadBps', 'Gbit/s', 1e9, true],
  ['64-byte ping-pong round trip, median', 'rttMedianUs', 'us', 1, false],
  ['64-byte ping-pong round trip, p99', 'rttP99Us', 'us', 1, false],
];
const figures = [];
console.log(`\n${'figure'.padEnd(40)} ${'libretto (TAP)'.padStart(15)} ${'Linux (veth)'.padStart(14)} ${'ratio'.padStart(8)}`);
for (const [label, key, unit, scale, higherIsBetter] of rows) {
  const a = pick('libretto', key) / scale;
  const b = pick('linux', key) / scale;
  const ratio = higherIsBetter ? a / b : b / a;
  console.log(`${label.padEnd(40)} ${a.toFixed(unit === 'us' ? 0 : 3).padStart(11)} ${unit.padEnd(3)} ${b.toFixed(unit === 'us' ? 0 : 3).padStart(10)} ${unit.padEnd(3)} ${ratio.toFixed(3).padStart(8)}`);
  figures.push({ name: `stack.libretto.${key}`, value: a, unit }, { name: `stack.linux.${key}`, value: b, unit }, { name: `stack.ratio.${key}`, value: ratio, unit: 'libretto/linux' });
}
console.log(`(${ROUNDS} rounds, medians; ${BYTES >> 20} MiB each way; ${PINGS} pings; ratio is libretto relative to Linux, 1.0 = as good)`);
mkdirSync(join(root, 'bench/results'), { recursive: true });
writeFileSync(join(root, 'bench/results/stack.json'), JSON.stringify(figures, null, 2) + '\n');
console.log('wrote bench/results/stack.json');
process.exit(0);
