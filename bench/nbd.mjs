// The NBD benchmark (`make bench`, as root): fio's nbd engine against the
// nbd app (server mode, then direct mode after `ctl switch nbd direct
// block`) over a TAP device in a network namespace of its own, and against
// `nbdkit file` (the reference NBD server) in the same namespace, all on
// the same backing file: 4 KiB random reads and writes at queue depth 16
// and 1 MiB sequential reads and writes. Writes bench/results/nbd.json and
// docs/plots/nbd.svg. Ratios against nbdkit are the figures that count.
//
// usage: node bench/nbd.mjs [--quick]
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { barChart } from './svg.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const quick = process.argv.includes('--quick');
if (process.getuid?.() !== 0) {
  console.log('bench/nbd.mjs: skipped: needs root for a TAP device and a network namespace (run make bench as root)');
  process.exit(0);
}
for (const t of ['fio', 'nbdkit', 'ip']) {
  if (spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0) {
    console.log(`bench/nbd.mjs: skipped: needs ${t} (tools/debian-packages.txt; make test installs it as root)`);
    process.exit(0);
  }
}
const NS = 'lbnbb';
const TAP = 'lbnbb0';
const sh = (cmd, quiet = false) => {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  if (r.status !== 0 && !quiet) throw new Error(`${cmd}: ${r.stderr || r.stdout}`);
  return r.stdout;
};
const dir = mkdtempSync(join('/var/tmp', 'libretto-nbd-bench-'));
const procs = [];
const cleanup = () => {
  for (const p of procs) p.kill('SIGKILL');
  sh(`ip netns del ${NS} 2>/dev/null`, true);
  rmSync(dir, { recursive: true, force: true });
};
process.on('exit', cleanup);
sh(`ip netns del ${NS} 2>/dev/null`, true);
sh(`ip netns add ${NS} && ip netns exec ${NS} ip link set lo up`);
sh(`ip netns exec ${NS} ip tuntap add dev ${TAP} mode tap && ip netns exec ${NS} ip addr add 10.96.0.1/24 dev ${TAP} && ip netns exec ${NS} ip link set ${TAP} up`);

const SIZE_MIB = quick ? 256 : 1024;
const disk = join(dir, 'disk.img');
console.log(`bench/nbd.mjs: writing a ${SIZE_MIB} MiB backing file`);
sh(`dd if=/dev/urandom of=${disk} bs=1M count=${SIZE_MIB} oflag=direct status=none`);

const manifest = join(dir, 'm.json');
const ctlSock = join(dir, 'ctl.sock');
writeFileSync(
  manifest,
  JSON.stringify({
    name: 'nbd-bench',
    control: ctlSock,
    nic: { tap: TAP, mac: '02:00:00:00:96:01' },
    shared_ip: '10.96.0.2/24',
    network_server: join(root, 'build/components/network-server.wasm'),
    block: { device: disk, server: join(root, 'build/components/block-server.wasm'), queue_depth: 64 },
    apps: [{ name: 'nbd', image: join(root, 'build/images/nbd.wasm'), ports: { tcp: [10809] }, args: { port: 10809 }, block: { namespaces: [{ nsid: 1, offset: 0, size: `${SIZE_MIB}M`, block_size: 512 }] } }],
  }),
);
const sys = spawn('ip', ['netns', 'exec', NS, join(root, 'bin/libretto'), 'run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
procs.push(sys);
let out = '';
sys.stdout.on('data', (d) => (out += d));
sys.stderr.on('data', (d) => (out += d));
for (const t0 = Date.now(); !/nbd: listening/.test(out); ) {
  if (Date.now() - t0 > 120_000) throw new Error(`the system did not come up:\n${out}`);
  await new Promise((r) => setTimeout(r, 100));
}
const kit = spawn('ip', ['netns', 'exec', NS, 'nbdkit', '-f', '-p', '10810', '-i', '127.0.0.1', 'file', disk], { stdio: 'ignore' });
procs.push(kit);
await new Promise((r) => setTimeout(r, 1000));

const secs = quick ? 5 : 15;
const jobs = [
  { name: 'randread 4k qd16', rw: 'randread', bs: '4k', qd: 16 },
  { name: 'randwrite 4k qd16', rw: 'randwrite', bs: '4k', qd: 16 },
  { name: 'read 1M qd4', rw: 'read', bs: '1M', qd: 4 },
  { name: 'write 1M qd4', rw: 'write', bs: '1M', qd: 4 },
];
function fio(uri, job) {
  const r = spawnSync(
    'ip',
    ['netns', 'exec', NS, 'fio', '--name=b', '--ioengine=nbd', `--uri=${uri}`, `--rw=${job.rw}`, `--bs=${job.bs}`, `--iodepth=${job.qd}`, `--runtime=${secs}`, '--time_based', `--size=${SIZE_MIB}M`, '--output-format=json', `--directory=${dir}`],
    { encoding: 'utf8', timeout: (secs + 60) * 1000, cwd: dir },
  );
  if (r.status !== 0) throw new Error(`fio ${uri} ${job.name}: ${r.stderr}${r.stdout}`);
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
  if (j.error) throw new Error(`fio ${uri} ${job.name}: error ${j.error}`);
  const side = job.rw.endsWith('read') ? j.read : j.write;
  return { iops: side.iops, mbps: side.bw_bytes / 1e6 };
}
const ctl = (...a) => sh(`${join(root, 'bin/libretto')} ctl --socket ${ctlSock} ${a.join(' ')}`);

const results = [];
for (const job of jobs) {
  const kitR = fio('nbd://127.0.0.1:10810', job);
  ctl('switch', 'nbd', 'server', 'block');
  const server = fio('nbd://10.96.0.2:10809', job);
  ctl('switch', 'nbd', 'direct', 'block');
  const direct = fio('nbd://10.96.0.2:10809', job);
  ctl('switch', 'nbd', 'server', 'block');
  const row = { job: job.name, nbdkit: kitR, server, direct, server_vs_nbdkit: server.iops / kitR.iops, direct_vs_nbdkit: direct.iops / kitR.iops, server_vs_direct: server.iops / direct.iops };
  results.push(row);
  const f = (x) => (job.bs === '1M' ? `${x.mbps.toFixed(0)} MB/s` : `${(x.iops / 1000).toFixed(1)}k IOPS`);
  console.log(
    `${job.name.padEnd(18)} nbdkit ${f(kitR)}; nbd app server mode ${f(server)} (${(row.server_vs_nbdkit * 100).toFixed(0)}% of nbdkit), direct mode ${f(direct)} (${(row.direct_vs_nbdkit * 100).toFixed(0)}%); server/direct ${(row.server_vs_direct * 100).toFixed(0)}%`,
  );
}
mkdirSync(join(root, 'bench/results'), { recursive: true });
writeFileSync(join(root, 'bench/results/nbd.json'), JSON.stringify({ when: new Date().toISOString(), size_mib: SIZE_MIB, secs, results }, null, 2));
mkdirSync(join(root, 'docs/plots'), { recursive: true });
const bars = results.flatMap((r) => [
  { label: `${r.job.split(' ')[0]} server`, value: r.server_vs_nbdkit * 100 },
  { label: `${r.job.split(' ')[0]} direct`, value: r.direct_vs_nbdkit * 100 },
]);
writeFileSync(join(root, 'docs/plots/nbd.svg'), barChart({ title: 'nbd app vs nbdkit file (fio --ioengine=nbd), % of nbdkit', yLabel: '% of nbdkit', bars, width: 760 }));
console.log('wrote bench/results/nbd.json, docs/plots/nbd.svg');
process.exit(0);
