/**
 * The nbd app against Debian's unmodified NBD clients, over TAP, inside a
 * network namespace this test makes and removes: the system (network
 * server, block server, the nbd image) and the clients all run in it, so
 * nothing touches the machine's own network.
 *
 * - nbdinfo: the export's size, block sizes, read-only flag;
 * - fio --ioengine=nbd: random and sequential reads and writes with
 *   --verify=crc32c, two connections at once, no errors;
 * - qemu-img convert of a random raw image into the export, then
 *   qemu-img compare against the original (and the backing file itself);
 * - nbdcopy from the export to a file, compared byte for byte;
 * - malformed requests from a hand-driven client (bad magic, unknown
 *   command and options, out of range, misaligned, above 32 MiB, writes
 *   to a read-only export) get an error reply or a clean disconnect while
 *   another connection and fio keep being served;
 * in server mode, again after `ctl switch nbd direct block`, and in
 * direct mode from boot on a namespace of 4096-byte blocks.
 *
 * Needs root (TAP, namespaces); outside CI it skips without, inside CI it
 * must run. Missing clients are installed with apt-get.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, readSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, ROOT, component, run } from './helpers.ts';

const NETNS = 'lbnbd';
const TAP = 'lbnbd0';
const LINUX_IP = '10.97.0.1';
const SYS_IP = '10.97.0.2';
const PORT = 10809;
const MiB = 1 << 20;
/** Namespace 1: 64 MiB of 512-byte blocks at the device's start; namespace 2: 16 MiB of 4096-byte blocks after it, read-only. */
const NS1_BYTES = 64 * MiB;
const NS2_BYTES = 16 * MiB;
const DEVICE_BYTES = 96 * MiB;
const IMAGE = join(ROOT, 'build', 'images', 'nbd.wasm');
const CLIENTS: [string, string][] = [
  ['fio', 'fio'],
  ['nbdinfo', 'libnbd-bin'],
  ['nbdcopy', 'libnbd-bin'],
  ['qemu-img', 'qemu-utils'],
  ['nbdkit', 'nbdkit'],
];

const dir = mkdtempSync(join(tmpdir(), 'libretto-nbd-'));

function has(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

/** Root, `ip`, and the NBD clients (installed here if missing). */
function gate(): { ok: boolean; why: string } {
  if (process.getuid?.() !== 0) return { ok: false, why: 'needs root for TAP devices and network namespaces (runs in CI, which is root)' };
  if (!has('ip')) return { ok: false, why: 'needs ip (iproute2)' };
  const missing = [...new Set(CLIENTS.filter(([t]) => !has(t)).map(([, pkg]) => pkg))];
  if (missing.length > 0) {
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const install = () => spawnSync('apt-get', ['install', '-y', '-qq', ...missing], { env, encoding: 'utf8', timeout: 600_000 });
    if (install().status !== 0) {
      spawnSync('apt-get', ['update', '-qq'], { env, timeout: 300_000 });
      install();
    }
    const still = CLIENTS.filter(([t]) => !has(t)).map(([t]) => t);
    if (still.length > 0) return { ok: false, why: `needs ${still.join(', ')} (apt-get install -y ${missing.join(' ')} failed)` };
  }
  return { ok: true, why: '' };
}

let gated: { ok: boolean; why: string } | null = null;
function skipOrFail(): boolean {
  gated ??= gate();
  if (gated.ok) return false;
  if (process.env.CI) throw new Error(`the NBD test must run in CI: ${gated.why}`);
  console.log(`    skipped: ${gated.why}`);
  return true;
}

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** A command inside the namespace (in the test's directory: fio leaves files behind). */
function ns(cmd: string, timeoutMs = 120_000): Ran {
  const r = spawnSync('ip', ['netns', 'exec', NETNS, 'sh', '-c', cmd], { cwd: dir, encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + (r.error ? String(r.error) : '') };
}

function netnsUp(): void {
  spawnSync('ip', ['netns', 'del', NETNS]);
  const steps = [
    ['netns', 'add', NETNS],
    ['netns', 'exec', NETNS, 'ip', 'link', 'set', 'lo', 'up'],
    ['netns', 'exec', NETNS, 'ip', 'tuntap', 'add', 'dev', TAP, 'mode', 'tap'],
    ['netns', 'exec', NETNS, 'ip', 'addr', 'add', `${LINUX_IP}/24`, 'dev', TAP],
    ['netns', 'exec', NETNS, 'ip', 'link', 'set', TAP, 'up'],
  ];
  for (const s of steps) {
    const r = spawnSync('ip', s, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ip ${s.join(' ')}: ${r.stderr}`);
  }
}

function netnsDown(): void {
  spawnSync('ip', ['netns', 'del', NETNS]);
}

interface NsSpec {
  nsid: number;
  offset: number;
  size: number;
  block_size: number;
  read_only?: boolean;
}

function manifest(name: string, mode: 'server' | 'direct', namespaces: NsSpec[], withServer: boolean): string {
  const path = join(dir, `${name}.json`);
  writeFileSync(
    path,
    JSON.stringify({
      name,
      control: join(dir, `${name}.sock`),
      nic: { tap: TAP, mac: '02:00:00:00:cc:01' },
      shared_ip: `${SYS_IP}/24`,
      network_server: component('network-server.wasm'),
      block: { device: join(dir, `${name}.img`), size: DEVICE_BYTES, ...(withServer ? { server: component('block-server.wasm') } : {}) },
      apps: [{ name: 'nbd', image: IMAGE, ports: { tcp: [PORT] }, args: { port: PORT }, block: { namespaces, mode } }],
    }),
  );
  return path;
}

class System {
  out = '';
  proc: ChildProcess;
  exited: Promise<number | null>;
  constructor(readonly manifest: string) {
    this.proc = spawn('ip', ['netns', 'exec', NETNS, BIN, 'run', manifest], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d) => (this.out += d));
    this.proc.stderr!.on('data', (d) => (this.out += d));
    this.exited = new Promise((r) => this.proc.on('close', (c) => r(c)));
  }
  async waitFor(re: RegExp, ms = 30_000): Promise<RegExpMatchArray> {
    const t0 = Date.now();
    for (;;) {
      const m = this.out.match(re);
      if (m) return m;
      if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${re}; output:\n${this.out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  ctl(...cmd: string[]): any {
    const r = run(BIN, ['ctl', '--manifest', this.manifest, '--json', ...cmd]);
    if (r.status !== 0) throw new Error(`ctl ${cmd.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  }
  blockApp(): any {
    return this.ctl('stats').block.apps.find((a: any) => a.name === 'nbd');
  }
  async stop(): Promise<number | null> {
    this.proc.kill('SIGTERM');
    const code = await Promise.race([this.exited, new Promise<null>((r) => setTimeout(() => r(null), 10_000))]);
    this.proc.kill('SIGKILL');
    return code;
  }
}

const uri = (exp = '') => `nbd://${SYS_IP}:${PORT}/${exp}`;

function nbdinfo(exp: string): any {
  const r = ns(`nbdinfo --json ${uri(exp)}`, 30_000);
  assert.is(r.status, 0, `nbdinfo: ${r.stderr}`);
  return JSON.parse(r.stdout).exports[0];
}

interface FioJob {
  error: number;
  read: { io_bytes: number; iops: number };
  write: { io_bytes: number; iops: number };
}

/** fio's nbd engine on the export: no error, and what it read and wrote. */
function fio(args: string, exp = ''): { read: number; write: number; iops: number } {
  const r = ns(`fio --output-format=json --ioengine=nbd --uri=${uri(exp)} --verify_fatal=1 --verify_state_save=0 ${args}`, 120_000);
  const text = r.stdout.slice(r.stdout.indexOf('{'));
  assert.is(r.status, 0, `fio ${args}: exit ${r.status}\n${r.stderr.slice(-3000)}`);
  const jobs: FioJob[] = JSON.parse(text).jobs;
  for (const j of jobs) assert.is(j.error, 0, `fio ${args}: job error ${j.error}\n${r.stderr.slice(-2000)}`);
  assert.not.match(r.stderr, /verify: bad|error=|Input\/output error/);
  return {
    read: jobs.reduce((n, j) => n + j.read.io_bytes, 0),
    write: jobs.reduce((n, j) => n + j.write.io_bytes, 0),
    iops: jobs.reduce((n, j) => n + j.read.iops + j.write.iops, 0),
  };
}

/** Random reads and writes (4 KiB, two connections at once) and sequential ones (1 MiB, then re-read), all verified. */
function fioRounds(label: string): void {
  const t0 = Date.now();
  const rand = fio(`--name=rand --rw=randrw --bs=4k --size=8M --numjobs=2 --offset_increment=8M --iodepth=16 --verify=crc32c`);
  assert.ok(rand.read > 0 && rand.write >= 2 * 8 * MiB * 0.3, `${label}: randrw moved ${JSON.stringify(rand)}`);
  const seq = fio(`--name=seq --rw=write --bs=1M --size=32M --offset=16M --iodepth=8 --verify=crc32c`);
  assert.is(seq.write, 32 * MiB);
  assert.is(seq.read, 32 * MiB, 'the verify pass read everything back');
  // The same job again, only verifying: sequential reads checked against the headers written above.
  const again = fio(`--name=seq --rw=write --bs=1M --size=32M --offset=16M --iodepth=8 --verify=crc32c --verify_only=1`);
  assert.is(again.read, 32 * MiB);
  console.log(`    ${label}: fio randrw ${Math.round(rand.iops)} IOPS (4 KiB, 2 connections, QD16), sequential write+verify and re-verify of 32 MiB; ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

/** qemu-img convert of random data into the export, qemu-img compare, then nbdcopy back and the backing file, all byte for byte. */
function copyRounds(label: string, exp: string, bytes: number, disk: string, diskOffset: number): void {
  const t0 = Date.now();
  const src = join(dir, `${label}-src.img`);
  const back = join(dir, `${label}-back.img`);
  const data = randomBytes(bytes);
  writeFileSync(src, data);
  let r = ns(`qemu-img convert -n -f raw -O raw ${src} ${uri(exp)}`, 120_000);
  assert.is(r.status, 0, `qemu-img convert: ${r.stderr}`);
  r = ns(`qemu-img compare -f raw -F raw ${src} ${uri(exp)}`, 60_000);
  assert.is(r.status, 0, `qemu-img compare: ${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /Images are identical/);
  r = ns(`nbdcopy ${uri(exp)} ${back}`, 60_000);
  assert.is(r.status, 0, `nbdcopy: ${r.stderr}`);
  const got = readFileSync(back);
  assert.is(got.length, bytes);
  assert.ok(got.equals(data), 'nbdcopy read back what qemu-img wrote');
  // qemu-img flushed before it exited: the data is in the file, where the namespace lies.
  const fd = openSync(disk, 'r');
  const onDisk = Buffer.alloc(bytes);
  readSync(fd, onDisk, 0, bytes, diskOffset);
  closeSync(fd);
  assert.ok(onDisk.equals(data), 'the backing file holds the data at the namespace offset');
  rmSync(src);
  rmSync(back);
  console.log(`    ${label}: qemu-img convert + compare, nbdcopy + cmp of ${bytes / MiB} MiB; ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

/** The hand-driven client's scenarios, with fio reading from another connection meanwhile. */
async function malformed(label: string): Promise<void> {
  const t0 = Date.now();
  const bg = spawn('ip', ['netns', 'exec', NETNS, 'fio', '--output-format=json', '--ioengine=nbd', `--uri=${uri()}`, '--name=bg', '--rw=randread', '--bs=4k', '--size=16M', '--iodepth=4', '--runtime=3', '--time_based'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let bgOut = '';
  bg.stdout!.on('data', (d) => (bgOut += d));
  bg.stderr!.on('data', (d) => (bgOut += d));
  const bgDone = new Promise<number | null>((r) => bg.on('close', (c) => r(c)));
  await new Promise((r) => setTimeout(r, 300));
  const r = await new Promise<Ran>((resolve) => {
    const p = spawn('ip', ['netns', 'exec', NETNS, process.execPath, '--import', 'tsx', join(ROOT, 'test', 'integration', 'nbd-raw.ts'), SYS_IP, String(PORT), String(NS1_BYTES), 'ns2'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout!.on('data', (d) => (stdout += d));
    p.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
  assert.is(r.status, 0, `nbd-raw: ${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  const failed = out.results.filter((x: any) => !x.ok);
  assert.equal(failed, [], `scenarios failed: ${JSON.stringify(failed, null, 2)}`);
  assert.ok(out.results.length >= 16, `${out.results.length} scenarios ran`);
  assert.is(out.keeper.failures, 0, `the other connection was not served: ${out.keeper.last}`);
  assert.ok(out.keeper.reads > 10, `the other connection read ${out.keeper.reads} times`);
  const bgCode = await bgDone;
  assert.is(bgCode, 0, `fio alongside: ${bgOut.slice(-2000)}`);
  const bgJob = JSON.parse(bgOut.slice(bgOut.indexOf('{'))).jobs[0];
  assert.is(bgJob.error, 0);
  assert.ok(bgJob.read.io_bytes > 0);
  console.log(`    ${label}: ${out.results.length} malformed-request scenarios answered; a second client read ${out.keeper.reads} times and fio ${Math.round(bgJob.read.iops)} IOPS meanwhile; ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

test('server mode, then switched to direct: Debian\'s NBD clients read and write the namespaces correctly; malformed requests are answered', async () => {
  if (skipOrFail()) return;
  netnsUp();
  const m = manifest('nbd-server', 'server', [
    { nsid: 1, offset: 0, size: NS1_BYTES, block_size: 512 },
    { nsid: 2, offset: NS1_BYTES, size: NS2_BYTES, block_size: 4096, read_only: true },
  ], true);
  const disk = join(dir, 'nbd-server.img');
  const sys = new System(m);
  try {
    await sys.waitFor(/\[nbd\] nbd: listening on port 10809/);

    const e1 = nbdinfo('');
    assert.is(e1['export-size'], NS1_BYTES);
    assert.is(e1.is_read_only, false);
    assert.is(e1.can_flush, true);
    assert.is(e1.can_fua, true);
    assert.is(e1.can_multi_conn, true);
    assert.is(e1.block_size_minimum, 512);
    assert.is(e1.block_size_preferred, 4096);
    assert.is(e1.block_size_maximum, 32 * MiB);
    const e2 = nbdinfo('ns2');
    assert.is(e2['export-size'], NS2_BYTES);
    assert.is(e2.is_read_only, true);
    assert.is(e2.block_size_minimum, 4096);
    const list = ns(`nbdinfo --list --json ${uri()}`, 30_000);
    assert.is(list.status, 0, list.stderr);
    assert.equal(JSON.parse(list.stdout).exports.map((x: any) => x['export-name']), ['ns1', 'ns2']);

    assert.is(sys.blockApp().mode, 'server');
    fioRounds('server mode');
    copyRounds('server', 'ns1', NS1_BYTES, disk, 0);
    await malformed('server mode');
    const before = sys.blockApp();
    assert.ok(before.via_server > 0, JSON.stringify(before));

    // The same system, its block queue moved to a device queue of its own.
    const sw = sys.ctl('switch', 'nbd', 'direct', 'block');
    assert.match(JSON.stringify(sw), /switched to direct mode/);
    assert.is(sys.blockApp().mode, 'direct');
    fioRounds('direct mode (switched)');
    copyRounds('switched', 'ns1', NS1_BYTES, disk, 0);
    await malformed('direct mode (switched)');
    const after = sys.blockApp();
    assert.ok(after.direct > before.direct, `commands went direct: ${JSON.stringify(after)}`);
    assert.is(after.via_server, before.via_server, 'none through the server after the switch');
    assert.is(after.errors, 0, `block errors: ${JSON.stringify(after)}`);
    assert.is(after.inflight, 0);
    assert.is(nbdinfo('')['export-size'], NS1_BYTES);
    assert.match(sys.out, /nbd: .*: closed: bad request magic/);
  } finally {
    const code = await sys.stop();
    netnsDown();
    assert.is(code, 0, `the system stops cleanly:\n${sys.out.slice(-3000)}`);
    // The app checks itself whenever its last connection has gone.
    assert.not.match(sys.out, /nbd: BUG/);
  }
});

test('direct mode from boot (no block server), 4096-byte blocks at an offset: qemu-img, nbdcopy and fio', async () => {
  if (skipOrFail()) return;
  netnsUp();
  const offset = 8 * MiB;
  const bytes = 32 * MiB;
  const m = manifest('nbd-direct', 'direct', [{ nsid: 1, offset, size: bytes, block_size: 4096 }], false);
  const disk = join(dir, 'nbd-direct.img');
  const sys = new System(m);
  try {
    await sys.waitFor(/\[nbd\] nbd: listening on port 10809/);
    const e = nbdinfo('');
    assert.is(e['export-size'], bytes);
    assert.is(e.block_size_minimum, 4096);
    assert.is(sys.blockApp().mode, 'direct');
    copyRounds('direct', '', bytes, disk, offset);
    const r = fio(`--name=d --rw=randrw --bs=4k --size=16M --iodepth=32 --verify=crc32c`);
    assert.ok(r.read > 0 && r.write > 0);
    // Nothing outside the namespace was touched.
    const fd = openSync(disk, 'r');
    const head = Buffer.alloc(offset);
    readSync(fd, head, 0, offset, 0);
    const tail = Buffer.alloc(DEVICE_BYTES - offset - bytes);
    readSync(fd, tail, 0, tail.length, offset + bytes);
    closeSync(fd);
    assert.ok(head.every((x) => x === 0) && tail.every((x) => x === 0), 'the device outside the namespace is untouched');
    const st = sys.blockApp();
    assert.is(st.via_server, 0);
    assert.is(st.errors, 0);
  } finally {
    const code = await sys.stop();
    netnsDown();
    assert.is(code, 0, `the system stops cleanly:\n${sys.out.slice(-3000)}`);
    // The app checks itself whenever its last connection has gone.
    assert.not.match(sys.out, /nbd: BUG/);
  }
});

test.after(() => {
  rmSync(dir, { recursive: true, force: true });
});

test.run();
