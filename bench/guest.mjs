// The guest benchmark (`make bench`, as root): the libretto guest image
// (xen-host/, `make image`) under QEMU, and Linux's own servers in the same
// guest, on the same kernel and the same emulated NIC:
//
//   - the libretto system of xen-host/system.json: the httpd app at
//     10.0.20.2:80 and the nbd app at 10.0.20.2:10809 behind the network
//     server, which drives the virtio-net NIC through an AF_PACKET socket
//     with MAC 02:00:00:00:20:02; the nbd app's namespace is 64-192 MiB of
//     the NVMe drive, through the block server (io_uring, O_DIRECT);
//   - Linux's stack on the same NIC with the NIC's own MAC
//     (52:54:00:00:20:10) at 10.0.20.9: Debian's nginx (one worker on :80,
//     `worker_processes auto` on :8080) serving the same bytes as httpd's
//     /4k, and nbdkit's file plugin on 192-320 MiB of the same NVMe drive
//     (offset filter), with `cache=none` on :10809 (the nearest nbdkit 1.32
//     has to O_DIRECT) and with the page cache on :10810.
//
// nginx, nbdkit and the libraries they link come from this machine's
// Debian packages, in a cpio appended to the initrd (INITRD_EXTRA) with a
// hook in /etc/libretto/init.d/ that gives Linux its address and starts
// them. The clients (wrk, fio --ioengine=nbd, curl) run in a network
// namespace of this benchmark's own, on the bridge of QEMU's TAP devices.
//
// Two boots. `shared`: both stacks on the virtio-net NIC; every server is
// measured. libretto's AF_PACKET socket reads every frame on its NIC, so
// Linux's traffic costs libretto's network server a drop per frame, which
// slows Linux's servers down: `alone`, a second boot in which libretto's
// network server drives the e1000 instead (and the `own` app, which would
// use it, is left out), measures Linux's servers with the virtio-net NIC
// to themselves.
//
// Figures: the boot (QEMU start to the first HTTP 200 from httpd, beside
// nginx's in the same boot and the kernel's own clock when it reached
// /init); wrk against /4k on each HTTP server, rounds alternating so that
// noise shows; fio 4 KiB random read and write at queue depth 16 and 1 MiB
// sequential read and write at queue depth 4 against each NBD server; with
// each, the host CPU QEMU used per request net of its idle use (under TCG,
// the guest's work, emulated). Checked while measuring: no frame crosses
// stacks (tcpdump on the bridge), TCP resets from the guest, HTTP errors.
// Ratios libretto/Linux. Writes bench/results/guest.json and prints a
// table. Under emulation the figures show function and proportions, not
// speed on hardware.
//
// usage: node bench/guest.mjs [--quick]
//   LIBRETTO_BENCH_SECONDS  per wrk or fio point (default 10; 4 with --quick)
//   LIBRETTO_BENCH_ROUNDS   wrk rounds, each server once per round (default 3; 1 with --quick)
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeFileSync, closeSync, writeSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sh, has, nginxConf } from './lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const quick = process.argv.includes('--quick');
const SECS = Number(process.env.LIBRETTO_BENCH_SECONDS ?? (quick ? 4 : 10));
const ROUNDS = Number(process.env.LIBRETTO_BENCH_ROUNDS ?? (quick ? 1 : 3));
const say = (s) => console.log(`bench/guest.mjs: ${s}`);
const die = (s) => {
  console.error(`bench/guest.mjs: ${s}`);
  process.exit(1);
};

if (process.getuid?.() !== 0) {
  say('skipped: needs root for QEMU on TAP devices in a network namespace (run make bench as root)');
  process.exit(0);
}
for (const [tool, pkg] of [
  ['qemu-system-x86_64', 'qemu-system-x86'],
  ['cpio', 'cpio'],
  ['busybox', 'busybox-static'],
  ['ip', 'iproute2'],
  ['curl', 'curl'],
  ['wrk', 'wrk'],
  ['fio', 'fio'],
  ['nginx', 'nginx-light'],
  ['nbdkit', 'nbdkit'],
  ['tcpdump', 'tcpdump'],
]) {
  if (!has(tool)) {
    say(`skipped: needs ${tool} (apt-get install ${pkg})`);
    process.exit(0);
  }
}
const NGINX = sh('command -v nginx').trim();
const NBDKIT = sh('command -v nbdkit').trim();
const NBDKIT_LIB = '/usr/lib/x86_64-linux-gnu/nbdkit';
for (const f of [`${NBDKIT_LIB}/plugins/nbdkit-file-plugin.so`, `${NBDKIT_LIB}/filters/nbdkit-offset-filter.so`]) {
  if (!existsSync(f)) die(`${f} is missing (apt-get install nbdkit)`);
}

// ---- the image ---------------------------------------------------------------

// Built here when missing or older than what goes into it (build-image.sh
// takes about 20 s), so `make bench` works on a fresh machine.
const G = join(root, 'build/guest');
const inputs = [
  'bin/libretto',
  'build/images/httpd.wasm',
  'build/images/nbd.wasm',
  'build/components/network-server.wasm',
  'build/components/block-server.wasm',
  'xen-host/init',
  'xen-host/guest.json',
  'xen-host/system.json',
  'xen-host/modules',
  'xen-host/build-image.sh',
];
for (const f of inputs) if (!existsSync(join(root, f))) die(`${f} is missing (make build components images, then make image)`);
const mtime = (f) => statSync(f).mtimeMs;
const image = [join(G, 'vmlinuz'), join(G, 'initrd.img')];
if (!image.every(existsSync) || Math.min(...image.map(mtime)) < Math.max(...inputs.map((f) => mtime(join(root, f))))) {
  say('building the guest image (xen-host/build-image.sh, as make image does)');
  const r = spawnSync('bash', [join(root, 'xen-host/build-image.sh')], { stdio: 'inherit' });
  if (r.status !== 0) die('the guest image did not build (the lines above say why; make image)');
}

// ---- names, files, cleanup -----------------------------------------------------

// This benchmark's own names: network namespace, TAP devices and bridge lbb*.
const NS = 'lbbguest';
const TAP0 = 'lbb0';
const TAP1 = 'lbb1';
const BRIDGE = 'lbbbr0';
const B = join(root, 'build/guest-bench'); // the drive, the overlay, the console
mkdirSync(B, { recursive: true });
const CONSOLE = join(B, 'console.log');
const CTL = join(B, 'ctl.sock');
const OVERLAY = { shared: join(B, 'bench-shared.cpio'), alone: join(B, 'bench-alone.cpio') };
const NVME = join(B, 'nvme.img');
const NVME_MIB = 320; // state 0-64, nbd app 64-192, nbdkit 192-320
const LIBRETTO = '10.0.20.2';
const LINUX = '10.0.20.9';
const NIC_MAC = '52:54:00:00:20:10'; // the virtio-net NIC's own MAC: Linux's
const LIBRETTO_MAC = '02:00:00:00:20:02'; // the network server's on that NIC
const E1000_MAC = '52:54:00:00:20:11';

let qemu = null;
const procs = [];
function cleanup() {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  if (qemu && qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
  sh(`ip netns del ${NS} 2>/dev/null`, true);
  for (const o of Object.values(OVERLAY)) rmSync(`${o}.initrd`, { force: true });
  rmSync(join(B, 'overlay'), { recursive: true, force: true });
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));
// A failure: one line saying what (with the console's tail where it helps), then cleanup.
const failed = (e) => die(e instanceof Error ? e.message : String(e));
process.on('uncaughtException', failed);
process.on('unhandledRejection', failed);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the overlay: nginx, nbdkit, their libraries, configs, the hook -----------

/** A file and every shared library it links (ldd), copied to the same paths under `dest`. */
function withLibraries(dest, file) {
  const put = (f) => {
    const to = join(dest, f);
    if (existsSync(to)) return;
    mkdirSync(dirname(to), { recursive: true });
    copyFileSync(f, to);
    chmodSync(to, 0o755);
  };
  put(file);
  for (const line of sh(`ldd ${file}`).split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/lib64\/\S+)/.exec(line);
    if (m) put(m[1]);
  }
}
const PAGE = Buffer.alloc(4096);
for (let i = 0; i < PAGE.length; i++) PAGE[i] = 97 + (i % 26); // httpd's /4k: a..z repeated
/**
 * The cpio appended to the initrd. `shared`: the image's own system, so
 * libretto and Linux share the virtio-net NIC. `alone`: the same, except
 * that libretto's network server drives the e1000 (and the `own` app, which
 * would use it for direct mode, is left out), so Linux has the virtio-net
 * NIC to itself: its figures undisturbed.
 */
function buildOverlay(variant) {
  const o = join(B, 'overlay');
  rmSync(o, { recursive: true, force: true });
  mkdirSync(o);
  withLibraries(o, NGINX);
  withLibraries(o, NBDKIT);
  withLibraries(o, `${NBDKIT_LIB}/plugins/nbdkit-file-plugin.so`);
  withLibraries(o, `${NBDKIT_LIB}/filters/nbdkit-offset-filter.so`);
  const file = (p, text, mode = 0o644) => {
    mkdirSync(join(o, dirname(p)), { recursive: true });
    writeFileSync(join(o, p), text, { mode });
  };
  file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  file('etc/group', 'root:x:0:\nnogroup:x:65534:\n');
  file('srv/www/4k', PAGE);
  if (variant === 'alone') {
    const sys = JSON.parse(readFileSync(join(root, 'xen-host/system.json'), 'utf8'));
    sys.nic.packet = E1000_MAC;
    sys.apps = sys.apps.filter((a) => !a.direct);
    file('etc/libretto/system.json', JSON.stringify(sys, null, 2) + '\n');
  }
  for (const [name, port, workers] of [
    ['nginx-1', 80, 1],
    ['nginx-auto', 8080, 'auto'],
  ]) {
    const d = `/run/${name}`;
    file(
      `etc/bench/${name}.conf`,
      nginxConf({ dir: d, workers, listen: `${LINUX}:${port}`, root: '/srv/www', errorLog: 'stderr' }),
    );
  }
  const kit = (port, cache) =>
    `${NBDKIT} -f -i ${LINUX} -p ${port} --filter=${NBDKIT_LIB}/filters/nbdkit-offset-filter.so ${NBDKIT_LIB}/plugins/nbdkit-file-plugin.so file=/dev/nvme0n1 offset=192M range=128M cache=${cache} &`;
  file(
    'etc/libretto/init.d/50-linux-servers',
    `#!/bin/sh
# bench/guest.mjs: Linux's own servers beside libretto, on the NIC libretto
# shares (by its MAC, 52:54:00:00:20:10; libretto uses 02:00:00:00:20:02).
dev=
i=0
while [ $i -lt 300 ]; do
  for d in /sys/class/net/*; do [ "$(cat $d/address 2>/dev/null)" = 52:54:00:00:20:10 ] && dev=\${d##*/}; done
  [ -n "$dev" ] && [ -b /dev/nvme0n1 ] && break
  i=$((i + 1)); sleep 0.1
done
[ -n "$dev" ] && [ -b /dev/nvme0n1 ] || { echo "linux-servers: no NIC 52:54:00:00:20:10 or no /dev/nvme0n1"; exit 1; }
# ARP for Linux's address from this NIC only: by default Linux would answer
# on every interface, the e1000 of libretto's \`own\` app included, and the
# bridge would send Linux's traffic there.
echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore
echo 2 > /proc/sys/net/ipv4/conf/all/arp_announce
ip addr add ${LINUX}/24 dev $dev && ip link set $dev up
for n in nginx-1 nginx-auto; do
  mkdir -p /run/$n && ${NGINX} -p /run/$n -e stderr -c /etc/bench/$n.conf &
done
${kit(10809, 'none')}
${kit(10810, 'default')}
echo "linux-servers: Linux at ${LINUX} on $dev: nginx on :80 (1 worker) and :8080 (auto), nbdkit on :10809 (cache=none) and :10810 (page cache)"
`,
    0o755,
  );
  sh(`cd ${o} && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet > ${OVERLAY[variant]}`);
  rmSync(o, { recursive: true, force: true });
}

// ---- the drive: grown for nbdkit's range, filled once with random data ----------

function prepareDrive() {
  if (existsSync(NVME) && statSync(NVME).size === NVME_MIB << 20) return;
  // The nbd app's range and nbdkit's hold the same kind of data (random,
  // allocated: no holes for QEMU to answer from); the state filesystem
  // (first 64 MiB) is made by the guest on its first boot.
  rmSync(NVME, { force: true });
  const fd = openSync(NVME, 'w');
  for (let mib = 64; mib < NVME_MIB; mib++) writeSync(fd, randomBytes(1 << 20), 0, 1 << 20, mib << 20);
  closeSync(fd);
  sh(`truncate -s ${NVME_MIB}M ${NVME}`);
}

// ---- the guest ------------------------------------------------------------------

const inns = (cmd) => `ip netns exec ${NS} ${cmd}`;
function ctl(cmd) {
  const r = spawnSync(join(root, 'bin/libretto'), ['guest', 'ctl', CTL, ...cmd.split(' ')], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`guest ctl ${cmd}: status ${r.status}: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout);
}
const consoleText = () => (existsSync(CONSOLE) ? readFileSync(CONSOLE, 'utf8') : '');
async function waitConsole(re, ms) {
  for (const t0 = Date.now(); ; ) {
    const m = consoleText().match(re);
    if (m) return m;
    if (qemu.exitCode !== null) throw new Error(`QEMU exited while waiting for ${re}; console:\n${consoleText().slice(-3000)}`);
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${re}; console:\n${consoleText().slice(-3000)}`);
    await sleep(100);
  }
}
let IDLE = 0; // host cores QEMU uses with the guest idle, measured after each boot
/** Host CPU seconds QEMU has used (all its threads). */
function qemuCpu() {
  const stat = readFileSync(`/proc/${qemu.pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** Boot; resolves with the boot figures once httpd has answered 200. */
async function boot(variant) {
  rmSync(CONSOLE, { force: true });
  const env = { ...process.env, NETNS: NS, TAP0, TAP1, BRIDGE, CONSOLE, CTL, NVME, NVME_MIB: String(NVME_MIB), INITRD_EXTRA: OVERLAY[variant], GUEST_DIR: G };
  const t0 = Date.now();
  qemu = spawn('bash', [join(root, 'xen-host/run-guest.sh')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  qemu.stdout.on('data', (d) => (out += d));
  qemu.stderr.on('data', (d) => (out += d));
  // Poll with a new curl every 200 ms (one may hang on ARP while a stack
  // is not up yet): the first 200 of each server, timed from its request.
  // nginx, started by the hook at /init, is Linux's figure in the same boot.
  const first = { [LIBRETTO]: 0, [LINUX]: 0 };
  const inflight = new Set();
  while (!first[LIBRETTO] || !first[LINUX]) {
    if (qemu.exitCode !== null) throw new Error(`QEMU exited during boot:\n${out}\nconsole:\n${consoleText().slice(-3000)}`);
    if (Date.now() - t0 > 240_000) throw new Error(`no HTTP reply from ${first[LIBRETTO] ? 'nginx' : 'httpd'} in 240 s; console:\n${consoleText().slice(-3000)}`);
    for (const ip of [LIBRETTO, LINUX]) {
      if (first[ip] || inflight.size >= 16) continue;
      const sent = Date.now();
      const c = spawn('ip', ['netns', 'exec', NS, 'curl', '-s', '-o', '/dev/null', '-m', '3', '-w', '%{http_code} %{time_total}', `http://${ip}/4k`], { stdio: ['ignore', 'pipe', 'ignore'] });
      procs.push(c);
      inflight.add(c);
      let o = '';
      c.stdout.on('data', (d) => (o += d));
      c.on('close', () => {
        inflight.delete(c);
        const [code, secs] = o.trim().split(' ');
        const at = (sent - t0) / 1000 + Number(secs);
        if (code === '200' && (!first[ip] || at < first[ip])) first[ip] = at;
      });
    }
    await sleep(200);
  }
  for (let i = 0; i < 50 && inflight.size; i++) await sleep(100); // an earlier request may still finish first
  const init = Number((await waitConsole(/init at ([\d.]+) s/, 5000))[1]);
  const sup = Number((await waitConsole(/supervisor up at ([\d.]+) s/, 5000))[1]);
  const madeState = /no state filesystem yet/.test(consoleText());
  const accel = /QEMU \((tcg|kvm)\)/.exec(out)?.[1] ?? '?';
  return { first: first[LIBRETTO], firstLinux: first[LINUX], init, sup, madeState, accel };
}

// ---- measuring ---------------------------------------------------------------------

const UNITS = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 };
const TIME = { us: 1e-3, ms: 1, s: 1000, m: 60000 };
function wrk(url, secs) {
  const args = ['-t1', '-c10', `-d${secs}s`, '--timeout', '10s', url];
  const c0 = qemuCpu();
  const t0 = Date.now();
  const r = spawnSync('ip', ['netns', 'exec', NS, 'wrk', ...args], { encoding: 'utf8', timeout: (secs + 60) * 1000 });
  const cpu = qemuCpu() - c0 - (IDLE * (Date.now() - t0)) / 1000;
  const out = (r.stdout ?? '') + (r.stderr ?? '');
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const tr = /Transfer\/sec:\s+([\d.]+)([KMG]?B)/.exec(out);
  const lat = /Latency\s+([\d.]+)(us|ms|s|m)\b/.exec(out);
  const n = /(\d+) requests in/.exec(out);
  if (!rps || !tr || !n) throw new Error(`wrk ${args.join(' ')}: ${out}`);
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return {
    rps: Number(rps[1]),
    mibps: (Number(tr[1]) * UNITS[tr[2]]) / 1024 ** 2,
    latencyMs: lat ? Number(lat[1]) * TIME[lat[2]] : NaN,
    errors: (se ? se.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0),
    cpuMsPerReq: (cpu * 1000) / Math.max(1, Number(n[1])),
  };
}
function fio(uri, job, secs) {
  const c0 = qemuCpu();
  const t0 = Date.now();
  const r = spawnSync(
    'ip',
    ['netns', 'exec', NS, 'fio', '--name=b', '--ioengine=nbd', `--uri=${uri}`, `--rw=${job.rw}`, `--bs=${job.bs}`, `--iodepth=${job.qd}`, `--runtime=${secs}`, '--time_based', '--size=128M', '--output-format=json'],
    { encoding: 'utf8', timeout: (secs + 90) * 1000, cwd: B },
  );
  const cpu = qemuCpu() - c0 - (IDLE * (Date.now() - t0)) / 1000;
  if (r.status !== 0) throw new Error(`fio ${uri} ${job.name}: ${r.stderr}${r.stdout}`);
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
  if (j.error) throw new Error(`fio ${uri} ${job.name}: error ${j.error}`);
  const side = job.rw.endsWith('read') ? j.read : j.write;
  return { iops: side.iops, mbps: side.bw_bytes / 1e6, cpuMsPerOp: (cpu * 1000) / Math.max(1, side.total_ios), errors: j.error };
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];


// ---- one boot --------------------------------------------------------------------

const HTTP = [
  { key: 'httpd', label: 'libretto httpd', url: `http://${LIBRETTO}/4k`, libretto: true },
  { key: 'nginx1', label: 'nginx, 1 worker', url: `http://${LINUX}/4k` },
  { key: 'nginxAuto', label: 'nginx, auto (2)', url: `http://${LINUX}:8080/4k` },
];
const NBD = [
  { key: 'nbd', label: 'libretto nbd app (O_DIRECT)', uri: `nbd://${LIBRETTO}:10809`, libretto: true },
  { key: 'nbdkit', label: 'nbdkit file cache=none', uri: `nbd://${LINUX}:10809` },
  { key: 'nbdkitCached', label: 'nbdkit file, page cache', uri: `nbd://${LINUX}:10810` },
];
const JOBS = [
  { name: 'randread 4k qd16', key: 'randread-4k-qd16', rw: 'randread', bs: '4k', qd: 16 },
  { name: 'randwrite 4k qd16', key: 'randwrite-4k-qd16', rw: 'randwrite', bs: '4k', qd: 16 },
  { name: 'read 1M qd4', key: 'read-1m-qd4', rw: 'read', bs: '1M', qd: 4 },
  { name: 'write 1M qd4', key: 'write-1m-qd4', rw: 'write', bs: '1M', qd: 4 },
];
const want = createHash('sha256').update(PAGE).digest('hex');

/** A tcpdump on the bridge; its lines. */
function watch(filter) {
  const w = { lines: [] };
  const p = spawn('ip', ['netns', 'exec', NS, 'tcpdump', '-i', BRIDGE, '-e', '-n', '-l', '-q', filter], { stdio: ['ignore', 'pipe', 'ignore'] });
  procs.push(p);
  let buf = '';
  p.stdout.on('data', (d) => {
    buf += d;
    const parts = buf.split('\n');
    buf = parts.pop();
    w.lines.push(...parts.filter((l) => l.trim()));
  });
  w.stop = () => p.kill('SIGTERM');
  return w;
}

/**
 * Boot the guest with an overlay (`shared` or `alone`), check that every
 * server answers right, measure `http` and `nbd` (the servers to measure),
 * shut down. The figures of that boot.
 */
async function session(variant, http, nbd) {
  sh(`ip netns del ${NS} 2>/dev/null`, true);
  sh(`ip netns add ${NS} && ip -n ${NS} link set lo up`);
  const load0 = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  say(`${variant}: booting the guest under QEMU (${variant === 'shared' ? 'libretto and Linux on the virtio-net NIC' : "Linux alone on the virtio-net NIC, libretto's network server on the e1000"}); load average ${load0}`);
  const b = await boot(variant);
  say(`${variant}: first HTTP 200 from httpd ${b.first.toFixed(1)} s after QEMU started (from nginx ${b.firstLinux.toFixed(1)} s); the kernel reached /init at ${b.init} s of its own clock, the supervisor at ${b.sup} s (${b.accel}${b.madeState ? '; this boot made the state filesystem' : ''})`);

  // Both stacks up, every server answering with the right bytes or export.
  await waitConsole(/\[nbd\] nbd: listening/, 120_000);
  await waitConsole(/linux-servers: Linux at/, 60_000);
  for (const s of HTTP) {
    let got = '';
    for (let i = 0; i < 100 && got !== want; i++) {
      got = sh(inns(`curl -s -m 5 ${s.url} | sha256sum`), true).split(' ')[0];
      if (got !== want) await sleep(300);
    }
    if (got !== want) throw new Error(`${s.url} does not serve httpd's /4k bytes; console:\n${consoleText().slice(-3000)}`);
  }
  for (const s of NBD) {
    let info = '';
    for (let i = 0; i < 50 && !/export-size: 134217728/.test(info); i++) {
      info = sh(inns(`nbdinfo ${s.uri} 2>&1`), true);
      if (!/export-size: 134217728/.test(info)) await sleep(300);
    }
    if (!/export-size: 134217728/.test(info)) throw new Error(`${s.uri} does not serve a 128 MiB export: ${info.trim()}`);
  }

  // While measuring: every TCP reset the guest sends, and every frame that
  // crosses stacks: one stack's MAC with the other's IP, or a frame for one
  // stack's IP sent to another MAC (Linux answering ARP on the wrong NIC did
  // that before the hook set arp_ignore).
  const rstWatch = watch(`tcp[tcpflags] & tcp-rst != 0 and (src host ${LIBRETTO} or src host ${LINUX})`);
  const strayWatch = watch(
    `((ip or arp) and ((ether src ${NIC_MAC} and not src host ${LINUX}) or (src host ${LINUX} and not ether src ${NIC_MAC}))) or ` +
      `(ip and ((dst host ${LINUX} and not ether dst ${NIC_MAC}) or (dst host ${LIBRETTO} and not ether dst ${LIBRETTO_MAC})))`,
  );
  await sleep(1500);
  // QEMU's CPU with both stacks idle: what a second of measuring costs anyway.
  const idle0 = qemuCpu();
  await sleep(5000);
  IDLE = (qemuCpu() - idle0) / 5;
  say(`${variant}: all servers answer; QEMU uses ${(IDLE * 100).toFixed(0)}% of a host core with the guest idle (subtracted from the CPU per request)`);

  // What Linux's traffic costs libretto: the network server's AF_PACKET
  // socket reads every frame on its NIC and drops Linux's as not its own.
  // Counted around each of Linux's points.
  const foreign = { dropped: 0, eth0: 0 };
  const counters = () => {
    const st = ctl('stats');
    // eth0's counters, where libretto drives it (ctl lists the NICs it uses).
    return { notOurs: st.server?.drops?.['not-ours'] ?? 0, eth0: st.guest.devices.find((d) => d.mac === NIC_MAC)?.rx_packets ?? NaN };
  };
  const point = (s, run) => {
    if (s.libretto) return run();
    const a = counters();
    const r = run();
    const z = counters();
    foreign.dropped += z.notOurs - a.notOurs;
    foreign.eth0 += z.eth0 - a.eth0;
    return r;
  };

  // wrk: warm up (ARP, caches), then rounds, the servers in a different order each round.
  for (const s of http) wrk(s.url, 1);
  const H = Object.fromEntries(http.map((s) => [s.key, []]));
  console.log(`${variant}: wrk -t1 -c10 -d${SECS}s, keep-alive, GET /4k; requests/s (QEMU CPU ms per request, net of idle):`);
  for (let round = 0; round < ROUNDS; round++) {
    const order = http.map((_, i) => http[(i + round) % http.length]);
    const line = [];
    for (const s of order) {
      const r = point(s, () => wrk(s.url, SECS));
      H[s.key].push(r);
      line.push(`${s.key} ${r.rps.toFixed(0)} (${r.cpuMsPerReq.toFixed(2)})${r.errors ? ` ERRORS ${r.errors}` : ''}`);
    }
    console.log(`  round ${round + 1}: ${line.join(', ')}`);
  }
  // fio: each job on every server, the order rotating.
  const F = {};
  console.log(`${variant}: fio --ioengine=nbd, ${SECS} s a point, 128 MiB exports (QEMU CPU ms per I/O, net of idle):`);
  for (const [i, job] of JOBS.entries()) {
    const order = nbd.map((_, k) => nbd[(k + i) % nbd.length]);
    const line = [];
    for (const s of order) {
      const r = point(s, () => fio(s.uri, job, SECS));
      (F[job.key] ??= {})[s.key] = r;
      line.push(`${s.key} ${job.bs === '1M' ? `${r.mbps.toFixed(1)} MB/s` : `${r.iops.toFixed(0)} IOPS`} (${r.cpuMsPerOp.toFixed(2)})`);
    }
    console.log(`  ${job.name.padEnd(18)} ${line.join(', ')}`);
  }
  await sleep(500);
  rstWatch.stop();
  strayWatch.stop();
  await sleep(300);
  writeFileSync(join(B, `rst-${variant}.txt`), rstWatch.lines.map((l) => l + '\n').join(''));
  writeFileSync(join(B, `stray-${variant}.txt`), strayWatch.lines.map((l) => l + '\n').join(''));
  const rstFrom = (ip) => rstWatch.lines.filter((l) => new RegExp(`: ${ip.replaceAll('.', '\\.')}\\.\\d+ > `).test(l)).length;

  // A clean shutdown.
  let clean = false;
  try {
    ctl('shutdown');
    for (let i = 0; i < 600 && qemu.exitCode === null; i++) await sleep(100);
    clean = qemu.exitCode === 0;
  } catch (e) {
    say(`${variant}: shutdown: ${e.message}`);
  }
  if (qemu.exitCode === null) qemu.kill('SIGKILL');
  sh(`ip netns del ${NS} 2>/dev/null`, true);
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  return { boot: b, http: H, fio: F, idle: IDLE, foreign, strays: strayWatch.lines.length, rst: { libretto: rstFrom(LIBRETTO), linux: rstFrom(LINUX) }, clean, load0, load };
}

// ---- the run -----------------------------------------------------------------------

buildOverlay('shared');
buildOverlay('alone');
prepareDrive();
const S = await session('shared', HTTP, NBD);
const A = await session('alone', HTTP.filter((s) => !s.libretto), NBD.filter((s) => !s.libretto));

// ---- reporting --------------------------------------------------------------------

const figures = [];
const fig = (name, value, unit) => figures.push({ name, value, unit });
const b = S.boot;
fig('guest.boot.first-http-reply', b.first, `s from QEMU start to httpd's first 200 (${b.accel})`);
fig('guest.boot.first-http-reply.nginx', b.firstLinux, "s from QEMU start to nginx's first 200 in the same boot");
fig('guest.boot.ratio.httpd-over-nginx', b.first / b.firstLinux, 'ratio (first HTTP 200)');
fig('guest.boot.kernel-to-init', b.init, "s of the guest kernel's clock when it ran /init");
fig('guest.boot.kernel-to-supervisor', b.sup, "s of the guest kernel's clock when libretto's supervisor started");
fig('guest.boot.made-state-filesystem', b.madeState ? 1 : 0, '1 if this boot made the state filesystem (first boot of the drive)');

const spread = (xs) => `${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)}`;
const sum = (rs) => ({ rps: median(rs.map((r) => r.rps)), cpu: median(rs.map((r) => r.cpuMsPerReq)), lat: median(rs.map((r) => r.latencyMs)), errors: rs.reduce((a, r) => a + r.errors, 0), all: rs.map((r) => r.rps) });
const H = { ...Object.fromEntries(Object.entries(S.http).map(([k, rs]) => [k, sum(rs)])), ...Object.fromEntries(Object.entries(A.http).map(([k, rs]) => [`${k}Alone`, sum(rs)])) };
for (const [k, h] of Object.entries(H)) {
  fig(`guest.http.4k.c10.${k}.rps`, h.rps, `req/s (median of ${ROUNDS}; rounds ${spread(h.all)})`);
  fig(`guest.http.4k.c10.${k}.latency`, h.lat, 'ms (mean, median of rounds)');
  fig(`guest.http.4k.c10.${k}.qemu-cpu`, h.cpu, 'ms of QEMU CPU per request, net of idle (median of rounds)');
  fig(`guest.http.4k.c10.${k}.errors`, h.errors, 'socket errors + non-2xx, all rounds');
}
for (const k of ['nginx1', 'nginxAuto', 'nginx1Alone', 'nginxAutoAlone']) {
  fig(`guest.http.4k.c10.ratio.httpd-over-${k}`, H.httpd.rps / H[k].rps, 'ratio (requests/s)');
  fig(`guest.http.4k.c10.cpu-ratio.${k}-over-httpd`, H[k].cpu / H.httpd.cpu, 'ratio (requests per QEMU CPU-second, httpd/nginx)');
}
const F = {};
for (const job of JOBS) F[job.key] = { ...S.fio[job.key], ...Object.fromEntries(Object.entries(A.fio[job.key]).map(([k, r]) => [`${k}Alone`, r])) };
for (const job of JOBS) {
  const big = job.bs === '1M';
  const val = (r) => (big ? r.mbps : r.iops);
  for (const [k, r] of Object.entries(F[job.key])) {
    fig(`guest.nbd.${job.key}.${k}`, val(r), big ? 'MB/s' : 'IOPS');
    fig(`guest.nbd.${job.key}.${k}.qemu-cpu`, r.cpuMsPerOp, 'ms of QEMU CPU per I/O, net of idle');
  }
  for (const k of ['nbdkit', 'nbdkitCached', 'nbdkitAlone', 'nbdkitCachedAlone']) fig(`guest.nbd.${job.key}.ratio.nbd-over-${k}`, val(F[job.key].nbd) / val(F[job.key][k]), 'ratio');
}
for (const [v, x] of [
  ['shared', S],
  ['alone', A],
]) {
  fig(`guest.${v}.nic.stray-frames`, x.strays, `frames with one stack's MAC and the other's IP, or for one stack's IP to another MAC, while measuring (build/guest-bench/stray-${v}.txt)`);
  fig(`guest.${v}.nic.rst-from-libretto`, x.rst.libretto, `TCP resets sent by 10.0.20.2 while measuring (build/guest-bench/rst-${v}.txt)`);
  fig(`guest.${v}.nic.rst-from-linux`, x.rst.linux, 'TCP resets sent by 10.0.20.9 while measuring');
  fig(`guest.${v}.nic.linux-frames-dropped-by-libretto`, x.foreign.dropped, `frames of Linux's points that libretto's network server read and dropped as not its own${Number.isNaN(x.foreign.eth0) ? '' : ` (eth0 received ${x.foreign.eth0})`}`);
  fig(`guest.${v}.qemu.idle-cpu`, x.idle, 'host cores QEMU uses with the guest idle');
  fig(`guest.${v}.shutdown.clean`, x.clean ? 1 : 0, '1 if the guest shut down cleanly and QEMU exited 0');
  fig(`guest.${v}.load-average`, Number(x.load.split(' ')[0]), 'load average (1 min) at the end of the boot, 2 cores');
}

const rows = [];
const row = (what, lib, libTxt, beside, besideTxt, alone, aloneTxt) => rows.push([what, libTxt, besideTxt, (lib / beside).toFixed(3), aloneTxt, (lib / alone).toFixed(3)]);
const rate = (h) => `${h.rps.toFixed(0)} (${spread(h.all)})`;
row('wrk /4k, 10 conns: req/s (rounds)', H.httpd.rps, rate(H.httpd), H.nginx1.rps, rate(H.nginx1), H.nginx1Alone.rps, rate(H.nginx1Alone));
row('  nginx with 2 workers', H.httpd.rps, '', H.nginxAuto.rps, rate(H.nginxAuto), H.nginxAutoAlone.rps, rate(H.nginxAutoAlone));
row('  QEMU CPU ms per request (1 worker)', 1 / H.httpd.cpu, H.httpd.cpu.toFixed(2), 1 / H.nginx1.cpu, H.nginx1.cpu.toFixed(2), 1 / H.nginx1Alone.cpu, H.nginx1Alone.cpu.toFixed(2));
for (const job of JOBS) {
  const v = F[job.key];
  const big = job.bs === '1M';
  const val = (r) => (big ? r.mbps : r.iops);
  const txt = (r) => `${big ? `${r.mbps.toFixed(1)} MB/s` : `${r.iops.toFixed(0)} IOPS`} (${r.cpuMsPerOp.toFixed(2)})`;
  row(`fio ${job.name}`, val(v.nbd), txt(v.nbd), val(v.nbdkit), txt(v.nbdkit), val(v.nbdkitAlone), txt(v.nbdkitAlone));
  row('  nbdkit with the page cache', val(v.nbd), '', val(v.nbdkitCached), txt(v.nbdkitCached), val(v.nbdkitCachedAlone), txt(v.nbdkitCachedAlone));
}
const W = [36, 22, 22, 6, 22, 6];
const line = (cells) => cells.map((c, i) => (i === 0 ? String(c).padEnd(W[i]) : String(c).padStart(W[i]))).join(' ');
console.log(`\nlibretto against Linux in the same guest (${b.accel}, 2 vCPUs); load average ${S.load0} at the start, ${A.load} at the end`);
console.log('Linux beside: nginx/nbdkit on the NIC libretto shares, same boot; Linux alone: a second boot, libretto on the e1000');
console.log('(QEMU CPU ms per request or I/O, net of idle, in parentheses; ratios libretto/Linux)');
console.log(line(['figure', 'libretto', 'Linux beside', 'ratio', 'Linux alone', 'ratio']));
for (const r of rows) console.log(line(r));
console.log(line(['boot: QEMU start to first HTTP 200', `${b.first.toFixed(1)} s`, `${b.firstLinux.toFixed(1)} s`, (b.first / b.firstLinux).toFixed(3), '', '']));
console.log(`boot: the kernel ran /init at ${b.init} s of its clock, libretto's supervisor started at ${b.sup} s${b.madeState ? ' (this boot made the state filesystem)' : ''}`);
for (const [v, x] of [
  ['shared', S],
  ['alone', A],
]) {
  console.log(
    `${v}: QEMU idle ${(x.idle * 100).toFixed(0)}% of a core; stray frames ${x.strays}; TCP resets from 10.0.20.2 ${x.rst.libretto}, from 10.0.20.9 ${x.rst.linux}; Linux's frames libretto read and dropped ${x.foreign.dropped}${Number.isNaN(x.foreign.eth0) ? '' : ` (eth0 received ${x.foreign.eth0} in Linux's points)`}; clean shutdown ${x.clean}`,
  );
}
const errs = Object.entries(H).filter(([, h]) => h.errors);
console.log(`HTTP errors (socket errors + non-2xx): ${errs.length ? errs.map(([k, h]) => `${k} ${h.errors}`).join(', ') : 'none'}`);
mkdirSync(join(root, 'bench/results'), { recursive: true });
writeFileSync(join(root, 'bench/results/guest.json'), JSON.stringify(figures, null, 2) + '\n');
console.log('wrote bench/results/guest.json');
process.exit(0);
