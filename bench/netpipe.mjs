// The NetPIPE benchmark (as root): Debian's NPtcp transmitter
// (`NPtcp -h IP`) from the host's network stack against three receivers
// reached the same way, in one run:
//
//   server  - the netpipe image behind the network server, on a TAP NIC
//             (libretto run MANIFEST): the multiserver path
//   direct  - the netpipe image on a TAP device of its own (libretto app):
//             the library-OS path
//   linux   - Linux's own NPtcp receiver in a network namespace over a
//             veth pair: NPtcp to NPtcp
//
// The full default run (1 byte to 8 MiB + 3, 124 sizes) against each;
// --quick bounds it with -u 131072. Prints the one-way latency of small
// messages, throughput at 64 KiB, 1 MiB and 8 MiB and the peak, with the
// ratios to Linux (1.0 = as good); writes bench/results/netpipe.json and
// docs/plots/netpipe.svg (throughput against message size). Skips cleanly
// without root or without NPtcp. Removes what it made, even on failure.
//
// usage: node bench/netpipe.mjs [--quick]
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { lineChart } from './svg.mjs';
import { sh, has, started } from './lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const quick = process.argv.includes('--quick');
const BOUND = quick ? ['-u', '131072'] : [];

if (process.getuid?.() !== 0) {
  console.log('bench/netpipe.mjs: skipped: needs root for TAP devices and a veth pair (run make bench as root)');
  process.exit(0);
}
for (const tool of ['NPtcp', 'ip']) {
  if (!has(tool)) {
    console.log(`bench/netpipe.mjs: skipped: needs ${tool} (apt-get install netpipe-tcp iproute2)`);
    process.exit(0);
  }
}

const cleanup = () => sh('ip link del lmcns0 2>/dev/null; ip link del lmcnd0 2>/dev/null; ip netns del lmcnpeer 2>/dev/null; ip link del lmcnv0 2>/dev/null', true);
cleanup();
const procs = [];
process.on('exit', () => {
  for (const p of procs) p.kill('SIGKILL');
  cleanup();
});
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

const dir = mkdtempSync(join(tmpdir(), 'libretto-netpipe-bench-'));
const image = join(root, 'build/images/netpipe.wasm');

sh('ip tuntap add dev lmcns0 mode tap && ip addr add 10.62.20.1/24 dev lmcns0 && ip link set lmcns0 up');
const manifest = join(dir, 'np.json');
writeFileSync(
  manifest,
  JSON.stringify({
    name: 'netpipe-bench',
    control: join(dir, 'ctl.sock'),
    nic: { tap: 'lmcns0', mac: '02:00:00:00:62:b1' },
    shared_ip: '10.62.20.2/24',
    network_server: join(root, 'build/components/network-server.wasm'),
    apps: [{ name: 'np', image, ports: { tcp: [5002] }, args: {} }],
  }),
);
const sys = spawn(join(root, 'bin/libretto'), ['run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
procs.push(sys);
await started(sys, /netpipe: NPtcp receiver listening/, 'the system');

sh('ip tuntap add dev lmcnd0 mode tap && ip addr add 10.62.21.1/24 dev lmcnd0 && ip link set lmcnd0 up');
const direct = spawn(join(root, 'bin/libretto'), ['app', image, '--tap', 'lmcnd0', 'ip=10.62.21.2/24'], { stdio: ['ignore', 'pipe', 'pipe'] });
procs.push(direct);
await started(direct, /netpipe: NPtcp receiver listening/, 'the direct app');

sh('ip netns add lmcnpeer && ip link add lmcnv0 type veth peer name lmcnv1 && ip link set lmcnv1 netns lmcnpeer');
sh('ip addr add 10.62.22.1/24 dev lmcnv0 && ip link set lmcnv0 up');
sh('ip -n lmcnpeer addr add 10.62.22.2/24 dev lmcnv1 && ip -n lmcnpeer link set lmcnv1 up && ip -n lmcnpeer link set lo up');

/** One NPtcp run against `ip`; its -o file as [bytes, Mbit/s, seconds] rows. */
async function nptcp(who, ip) {
  let receiver = null;
  if (who === 'linux') {
    // Linux's receiver serves one run and exits; it needs the transmitter's bound.
    receiver = spawn('ip', ['netns', 'exec', 'lmcnpeer', 'NPtcp', ...BOUND], { stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(receiver);
    await new Promise((r) => setTimeout(r, 500));
  }
  const file = join(dir, `${who}.out`);
  const t0 = Date.now();
  const r = spawnSync('NPtcp', ['-h', ip, '-o', file, ...BOUND], { encoding: 'utf8', timeout: 900_000 });
  if (r.status !== 0) throw new Error(`NPtcp -h ${ip}: exit ${r.status}: ${(r.stdout + r.stderr).slice(-2000)}`);
  receiver?.kill('SIGKILL');
  const rows = readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.trim().split(/\s+/).map(Number));
  console.log(`${who}: ${rows.length} sizes up to ${rows[rows.length - 1][0]} bytes in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return rows;
}

const peers = { server: '10.62.20.2', direct: '10.62.21.2', linux: '10.62.22.2' };
const curves = {};
for (const [who, ip] of Object.entries(peers)) curves[who] = await nptcp(who, ip);

const at = (rows, bytes) => rows.find((r) => r[0] === bytes);
const figures = [];
const rows = [
  ['latency, 1-byte messages (one way)', (c) => c[0][2] * 1e6, 'us', false],
  ['throughput at 64 KiB', (c) => at(c, 65536)?.[1], 'Mbit/s', true],
  ['throughput at 1 MiB', (c) => at(c, 1048576)?.[1], 'Mbit/s', true],
  ['throughput at 8 MiB', (c) => at(c, 8388608)?.[1], 'Mbit/s', true],
  ['peak throughput', (c) => Math.max(...c.map((r) => r[1])), 'Mbit/s', true],
];
console.log(`\n${'NPtcp figure'.padEnd(38)} ${'server'.padStart(10)} ${'direct'.padStart(10)} ${'Linux'.padStart(10)} ${'srv/Linux'.padStart(10)} ${'dir/Linux'.padStart(10)}`);
for (const [label, f, unit, higher] of rows) {
  const v = Object.fromEntries(Object.keys(peers).map((w) => [w, f(curves[w])]));
  if (v.linux === undefined) continue;
  const ratio = (a, b) => (higher ? a / b : b / a);
  const fmt = (x) => (x === undefined ? '-' : unit === 'us' ? x.toFixed(1) : x.toFixed(0)).padStart(10);
  console.log(`${`${label} (${unit})`.padEnd(38)} ${fmt(v.server)} ${fmt(v.direct)} ${fmt(v.linux)} ${ratio(v.server, v.linux).toFixed(3).padStart(10)} ${ratio(v.direct, v.linux).toFixed(3).padStart(10)}`);
  const key = label.replace(/[ ,()-]+/g, '-').replace(/-+$/, '');
  for (const w of Object.keys(peers)) figures.push({ name: `netpipe.${w}.${key}`, value: v[w], unit });
  figures.push({ name: `netpipe.ratio.server-over-linux.${key}`, value: ratio(v.server, v.linux), unit: 'ratio' });
  figures.push({ name: `netpipe.ratio.direct-over-linux.${key}`, value: ratio(v.direct, v.linux), unit: 'ratio' });
}
console.log('(ratios: 1.0 = as good as Linux; latency ratios are Linux/libretto)');
mkdirSync(join(root, 'bench/results'), { recursive: true });
writeFileSync(join(root, 'bench/results/netpipe.json'), JSON.stringify({ figures, curves }, null, 2) + '\n');
mkdirSync(join(root, 'docs/plots'), { recursive: true });
writeFileSync(
  join(root, 'docs/plots/netpipe.svg'),
  lineChart({
    title: 'NPtcp throughput against message size: libretto receivers and Linux NPtcp',
    xLabel: 'message size (bytes, log scale)',
    yLabel: 'Mbit/s',
    logX: true,
    series: Object.keys(peers).map((w) => ({ name: w === 'linux' ? 'Linux NPtcp (veth)' : `libretto ${w} (TAP)`, points: curves[w].map((r) => [r[0], r[1]]) })),
  }),
);
console.log('wrote bench/results/netpipe.json, docs/plots/netpipe.svg');
process.exit(0);
