// The block service benchmark (`make bench`): on one backing file, in the
// same run, Linux's own io_uring (`fio --ioengine=io_uring --direct=1`)
// against the blockgen image driving the block service in server mode
// (through the block server) and in direct mode (a device queue of its
// own): 4 KiB random reads and writes at queue depth 16, 1 MiB sequential
// reads and writes. Ratios against fio are the figures that count: the
// machine is noisy. Writes bench/results/block.json and
// docs/plots/block.svg. No root needed.
//
// usage: node bench/block.mjs [--quick]
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { barChart } from './svg.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const quick = process.argv.includes('--quick');
if (spawnSync('sh', ['-c', 'command -v fio']).status !== 0) {
  console.log('bench/block.mjs: skipped: needs fio (apt-get install fio; make test installs it as root)');
  process.exit(0);
}
// /var/tmp: a disk file system (O_DIRECT), not tmpfs.
const dir = mkdtempSync(join(existsDir('/var/tmp') ? '/var/tmp' : tmpdir(), 'libretto-block-bench-'));
const disk = join(dir, 'disk.img');
const SIZE_MIB = quick ? 256 : 1024;
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

function existsDir(p) {
  return spawnSync('test', ['-d', p]).status === 0;
}

console.log(`bench/block.mjs: writing a ${SIZE_MIB} MiB backing file`);
const dd = spawnSync('dd', ['if=/dev/urandom', `of=${disk}`, 'bs=1M', `count=${SIZE_MIB}`, 'oflag=direct', 'status=none']);
if (dd.status !== 0) throw new Error(`dd: ${dd.stderr}`);

const jobs = [
  { name: 'randread 4k qd16', op: 'randread', bs: 4096, qd: 16, ops: quick ? 20000 : 100000 },
  { name: 'randwrite 4k qd16', op: 'randwrite', bs: 4096, qd: 16, ops: quick ? 20000 : 100000 },
  { name: 'read 1M qd4', op: 'read', bs: 1 << 20, qd: 4, ops: quick ? 400 : 2000 },
  { name: 'write 1M qd4', op: 'write', bs: 1 << 20, qd: 4, ops: quick ? 400 : 2000 },
];

function fio(job) {
  const r = spawnSync(
    'fio',
    ['--name=ref', `--filename=${disk}`, '--ioengine=io_uring', '--direct=1', `--rw=${job.op}`, `--bs=${job.bs}`, `--iodepth=${job.qd}`, `--number_ios=${job.ops}`, `--size=${SIZE_MIB}M`, '--output-format=json', '--randrepeat=0'],
    { encoding: 'utf8', timeout: 300_000 },
  );
  if (r.status !== 0) throw new Error(`fio: ${r.stderr}${r.stdout}`);
  const j = JSON.parse(r.stdout).jobs[0];
  const side = job.op.endsWith('read') ? j.read : j.write;
  return { iops: side.iops, mbps: side.bw_bytes / 1e6 };
}

async function blockgen(job, mode) {
  const manifest = join(dir, `m-${mode}.json`);
  const sock = join(dir, `ctl-${mode}.sock`);
  writeFileSync(
    manifest,
    JSON.stringify({
      name: 'block-bench',
      control: sock,
      nic: { gateway: { forwards: [{ listen: '127.0.0.1:18411', to: '10.0.0.2:80' }] } },
      shared_ip: '10.0.0.2/24',
      network_server: join(root, 'build/components/network-server.wasm'),
      block: { device: disk, server: join(root, 'build/components/block-server.wasm'), queue_depth: 64 },
      apps: [
        {
          name: 'gen',
          image: join(root, 'build/images/blockgen.wasm'),
          args: { mode: 'load', op: job.op, bs: job.bs, qd: job.qd, ops: job.ops },
          block: { mode, queue_depth: 64, namespaces: [{ nsid: 1, offset: 0, size: `${SIZE_MIB}M`, block_size: 4096 }] },
        },
      ],
    }),
  );
  const p = spawn(join(root, 'bin/libretto'), ['run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let t0 = 0;
  let t1 = 0;
  const done = new Promise((res) => {
    const take = (d) => {
      out += d;
      if (!t0 && /blockgen: start/.test(out)) t0 = performance.now();
      if (!t1 && /blockgen: done/.test(out)) {
        t1 = performance.now();
        res();
      }
    };
    p.stdout.on('data', take);
    p.stderr.on('data', take);
    p.on('close', () => res());
  });
  const timer = setTimeout(() => p.kill('SIGKILL'), 300_000);
  await done;
  clearTimeout(timer);
  p.kill('SIGTERM');
  await new Promise((r) => p.on('close', r));
  const m = /blockgen: done (\d+) (\d+) errors=(\d+)/.exec(out);
  if (!m || !t1) throw new Error(`blockgen ${mode} ${job.name} did not finish:\n${out.slice(-2000)}`);
  if (Number(m[3]) > 0) throw new Error(`blockgen ${mode} ${job.name}: ${m[3]} errors`);
  const secs = (t1 - t0) / 1000;
  return { iops: Number(m[1]) / secs, mbps: Number(m[2]) / secs / 1e6 };
}

const results = [];
for (const job of jobs) {
  const linux = fio(job);
  const server = await blockgen(job, 'server');
  const direct = await blockgen(job, 'direct');
  const row = { job: job.name, fio: linux, server, direct, server_vs_fio: server.iops / linux.iops, direct_vs_fio: direct.iops / linux.iops, server_vs_direct: server.iops / direct.iops };
  results.push(row);
  const f = (x) => (job.bs >= 1 << 20 ? `${x.mbps.toFixed(0)} MB/s` : `${(x.iops / 1000).toFixed(1)}k IOPS`);
  console.log(
    `${job.name.padEnd(18)} fio io_uring ${f(linux)}; blockgen server mode ${f(server)} (${(row.server_vs_fio * 100).toFixed(0)}% of fio), direct mode ${f(direct)} (${(row.direct_vs_fio * 100).toFixed(0)}%); server/direct ${(row.server_vs_direct * 100).toFixed(0)}%`,
  );
}

mkdirSync(join(root, 'bench/results'), { recursive: true });
writeFileSync(join(root, 'bench/results/block.json'), JSON.stringify({ when: new Date().toISOString(), size_mib: SIZE_MIB, results }, null, 2));
mkdirSync(join(root, 'docs/plots'), { recursive: true });
const bars = results.flatMap((r) => [
  { label: `${r.job.split(' ')[0]} server`, value: r.server_vs_fio * 100 },
  { label: `${r.job.split(' ')[0]} direct`, value: r.direct_vs_fio * 100 },
]);
writeFileSync(join(root, 'docs/plots/block.svg'), barChart({ title: 'Block service vs Linux io_uring (fio) on the same file, % of fio', yLabel: '% of fio', bars, width: 760 }));
console.log('wrote bench/results/block.json, docs/plots/block.svg');
process.exit(0);
