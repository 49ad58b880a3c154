/**
 * The host as a bootable guest (xen-host/): `make image` under QEMU, TCG
 * where KVM cannot run guests, with an emulated NVMe drive and two NICs on
 * TAP devices in a network namespace of this test's own. From this machine:
 * curl gets the httpd app's pages on the shared IP and on an app's own IP;
 * `ctl` over the serial side channel reports the NIC's and the drive's
 * counters and switches the app to a NIC of its own; the guest shuts down
 * cleanly and its state on the NVMe drive is there on the next boot. Bad
 * configurations (a device that is not there, a missing .cwasm, a drive
 * too small for its namespaces) each give one clear line and a clean
 * power-off.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, ROOT } from './helpers.ts';
import { sh } from './net.ts';

const dir = mkdtempSync(join(tmpdir(), 'libretto-guest-'));
const tag = String(process.pid % 100000);
const NS = `lbguest${tag}`;
const TAP0 = `lg${tag}a`;
const TAP1 = `lg${tag}b`;
const BRIDGE = `lg${tag}br`;
const IMAGE = join(ROOT, 'build', 'guest');

function gate(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (TAP devices, a network namespace; CI is root)';
  for (const tool of ['qemu-system-x86_64', 'cpio', 'busybox', 'curl', 'ip', 'nbdinfo', 'nbdcopy']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `needs ${tool} (tools/debian-packages.txt; make test installs it as root)`;
  }
  return null;
}
const why = gate();

function skipOrFail(): boolean {
  if (!why) return false;
  if (process.env.CI) throw new Error(`the guest test must run in CI: ${why}`);
  console.log(`    skipped: ${why}`);
  return true;
}

/** A cpio archive that, appended to the initrd, replaces these files. */
function overlay(name: string, files: Record<string, string>): string {
  const root = join(dir, `overlay-${name}`);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  const out = join(dir, `overlay-${name}.cpio`);
  const r = sh(`cd ${root} && find . | cpio -o -H newc -R 0:0 --quiet > ${out}`);
  if (r.status !== 0) throw new Error(`cpio: ${r.out}`);
  return out;
}

const baseGuest = JSON.parse(readFileSync(join(ROOT, 'xen-host', 'guest.json'), 'utf8'));
const baseSystem = JSON.parse(readFileSync(join(ROOT, 'xen-host', 'system.json'), 'utf8'));

class Guest {
  proc: ChildProcess;
  out = '';
  started = Date.now();
  exited: Promise<number | null>;
  readonly consoleFile: string;
  readonly ctlSock: string;
  constructor(
    readonly name: string,
    opts: { nvme: string; nvmeMib?: number; extra?: string },
  ) {
    this.consoleFile = join(dir, `${name}.console`);
    this.ctlSock = join(dir, `${name}.ctl`);
    const env = {
      ...process.env,
      NETNS: NS,
      TAP0,
      TAP1,
      BRIDGE,
      CONSOLE: this.consoleFile,
      CTL: this.ctlSock,
      NVME: opts.nvme,
      NVME_MIB: String(opts.nvmeMib ?? 256),
      INITRD_EXTRA: opts.extra ?? '',
    };
    this.proc = spawn('bash', [join(ROOT, 'xen-host', 'run-guest.sh')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d) => (this.out += d));
    this.proc.stderr!.on('data', (d) => (this.out += d));
    this.exited = new Promise((r) => this.proc.on('close', (c) => r(c)));
  }
  console(): string {
    return existsSync(this.consoleFile) ? readFileSync(this.consoleFile, 'utf8') : '';
  }
  async waitConsole(re: RegExp, ms: number): Promise<RegExpMatchArray> {
    const t0 = Date.now();
    for (;;) {
      const m = this.console().match(re);
      if (m) return m;
      if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${re}; console:\n${this.console()}\nrun-guest:\n${this.out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  /** One command over the serial side channel; the parsed JSON reply. */
  ctl(cmd: string): any {
    const r = spawnSync(BIN, ['guest', 'ctl', this.ctlSock, ...cmd.split(' ')], { encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0) throw new Error(`guest ctl ${cmd}: status ${r.status}: ${r.stdout}${r.stderr}`);
    return JSON.parse(r.stdout);
  }
  /** Wait for QEMU to exit by itself (the guest powered off). */
  async poweredOff(ms: number): Promise<number | null> {
    const code = await Promise.race([this.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms))]);
    if (code === 'timeout') {
      this.kill();
      throw new Error(`the guest did not power off in ${ms / 1000} s; console:\n${this.console()}`);
    }
    return code;
  }
  kill(): void {
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}

function curl(url: string, out = '/dev/null'): { code: string; size: number } {
  const r = sh(`ip netns exec ${NS} curl -s -m 20 -o ${out} -w '%{http_code} %{size_download}' ${url}`, 30_000);
  const [code, size] = r.out.trim().split(' ');
  return { code, size: Number(size) };
}

/** The data the nbd app keeps on the NVMe drive across boots. */
const nbdData = join(dir, 'nbd-data.raw');
const NBD = 'nbd://10.0.20.2:10809';

test.before(() => {
  if (why) return;
  // The image from the host and components `make test` just built.
  const r = sh(`bash ${join(ROOT, 'xen-host', 'build-image.sh')}`, 300_000);
  if (r.status !== 0) throw new Error(`make image failed:\n${r.out}`);
  sh(`ip netns del ${NS} 2>/dev/null`);
  const n = sh(`ip netns add ${NS} && ip netns exec ${NS} ip link set lo up`);
  if (n.status !== 0) throw new Error(`network namespace: ${n.out}`);
});

test.after(() => {
  if (why) return;
  sh(`ip netns del ${NS} 2>/dev/null`);
  rmSync(dir, { recursive: true, force: true });
});

const nvme = join(dir, 'nvme.img');

test('the guest boots under QEMU, serves HTTP through the network server and on its own NIC, answers ctl over the serial line, and shuts down cleanly', async () => {
  if (skipOrFail()) return;
  const g = new Guest('main', { nvme });
  try {
    // KVM only where it can run guests; kvm_pvm (this machine kind) cannot.
    await new Promise((r) => setTimeout(r, 300));
    const accel = /QEMU \((tcg|kvm)\)/.exec(g.out)?.[1];
    if (existsSync('/sys/module/kvm_pvm') || !existsSync('/dev/kvm')) assert.is(accel, 'tcg', g.out);

    // Boot: the first HTTP reply, timed from QEMU's start.
    let first = 0;
    for (;;) {
      if (curl('http://10.0.20.2/').code === '200') {
        first = (Date.now() - g.started) / 1000;
        break;
      }
      if (Date.now() - g.started > 180_000) throw new Error(`no HTTP reply in 180 s; console:\n${g.console()}`);
      if (g.proc.exitCode !== null) throw new Error(`QEMU exited; console:\n${g.console()}\n${g.out}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    const init = Number((await g.waitConsole(/init at ([\d.]+) s/, 1000))[1]);
    console.log(`    guest: first HTTP reply ${first.toFixed(1)} s after QEMU started; the kernel reached /init at ${init} s of its clock (${accel})`);
    await g.waitConsole(/\[own\] httpd: listening/, 60_000);

    // The shared IP (through the network server) and the app's own IP.
    const page = join(dir, 'page.html');
    assert.equal(curl('http://10.0.20.2/', page), { code: '200', size: readFileSync(page).length });
    assert.match(readFileSync(page, 'utf8'), /libretto httpd/);
    assert.equal(curl('http://10.0.20.2/128k'), { code: '200', size: 131072 });
    assert.equal(curl('http://10.0.20.3/64k'), { code: '200', size: 65536 });

    // ctl across the serial line: the system's own answers...
    const apps = g.ctl('apps');
    assert.equal(apps.apps.map((a: any) => [a.name, a.ip, a.mode, a.status]), [
      ['web', '10.0.20.2', 'server', 'running'],
      ['own', '10.0.20.3', 'server', 'running'],
      ['nbd', '10.0.20.2', 'server', 'running'],
    ]);

    // NBD: an app whose data lives on the NVMe drive, through the block
    // server. 8 MiB of random data in, read back whole.
    await g.waitConsole(/\[nbd\] nbd: listening/, 60_000);
    const info = sh(`ip netns exec ${NS} nbdinfo ${NBD}`, 60_000);
    assert.is(info.status, 0, info.out);
    assert.match(info.out, /export-size: 134217728/);
    assert.is(sh(`head -c ${8 << 20} /dev/urandom > ${nbdData}`).status, 0);
    const put = sh(`ip netns exec ${NS} nbdcopy ${nbdData} ${NBD}`, 120_000);
    assert.is(put.status, 0, put.out);
    const back = join(dir, 'nbd-back.raw');
    const get = sh(`ip netns exec ${NS} nbdcopy ${NBD} ${back}`, 120_000);
    assert.is(get.status, 0, get.out);
    assert.ok(readFileSync(back).subarray(0, 8 << 20).equals(readFileSync(nbdData)), 'what nbdcopy wrote reads back the same');
    // ...and the guest's: NIC and drive counters.
    const stats = g.ctl('stats');
    assert.ok(stats.nic.rx_frames > 0 && stats.nic.tx_bytes > 131072, JSON.stringify(stats.nic));
    const drive = stats.guest.drive;
    assert.is(drive.device, 'nvme0n1');
    assert.is(drive.pci, '0000:00:05.0');
    assert.is(drive.bytes, 256 << 20);
    assert.ok(drive.writes > 0 && drive.reads > 0, JSON.stringify(drive));
    assert.equal(drive.namespaces, [{ name: 'nbd', offset_mib: 64, mib: 128 }]);
    const blk = stats.block;
    assert.ok(blk.apps[0].name === 'nbd' && blk.apps[0].completed > 100 && blk.apps[0].errors === 0, JSON.stringify(blk.apps));
    assert.ok(drive.writes > 0, 'the NVMe drive took the writes');
    const [eth0, eth1] = stats.guest.devices;
    assert.equal([eth0.driver, eth0.pci, eth0.mac], ['virtio_net', '0000:00:04.0', '52:54:00:00:20:10']);
    assert.equal([eth1.driver, eth1.pci], ['e1000', '0000:00:06.0']);
    assert.ok(eth0.tx_bytes >= stats.nic.tx_bytes, `the kernel's count of eth0 covers libretto's: ${JSON.stringify([eth0, stats.nic])}`);
    const e1000Before = eth1.tx_bytes;

    // The dynamic switch in the guest: `own` moves to the e1000 of its own.
    const sw = g.ctl('switch own direct');
    assert.match(sw.ok, /switched to direct mode/);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(curl('http://10.0.20.3/128k'), { code: '200', size: 131072 });
    const after = g.ctl('device').devices[1];
    assert.ok(after.tx_bytes - e1000Before >= 131072, `the reply left by the e1000: ${e1000Before} -> ${after.tx_bytes}`);
    assert.is(g.ctl('apps').apps[1].mode, 'direct');
    assert.match(g.ctl('switch own server').ok, /switched to server mode/);
    assert.equal(curl('http://10.0.20.3/4k'), { code: '200', size: 4096 });

    // The log lives on the drive.
    assert.ok(g.ctl('log').log.some((l: string) => /\[web\] httpd: listening/.test(l)));

    // A clean shutdown: the system stops, the drive is unmounted, QEMU exits 0.
    assert.match(g.ctl('shutdown').ok, /shutting down/);
    assert.is(await g.poweredOff(60_000), 0);
    const con = g.console();
    assert.match(con, /the system stopped \(exit status 0\)/);
    assert.match(con, /drive state synced and unmounted/);
    assert.match(con, /clean shutdown; powering off/);
  } finally {
    g.kill();
  }
  // The nbd app's data is on the drive itself, at its namespace's offset.
  const fd = openSync(nvme, 'r');
  const onDrive = Buffer.alloc(8 << 20);
  readSync(fd, onDrive, 0, onDrive.length, 64 << 20);
  closeSync(fd);
  assert.ok(onDrive.equals(readFileSync(nbdData)), 'the NVMe drive holds the data at 64 MiB');
});

test('the state on the NVMe drive is there on the next boot', async () => {
  if (skipOrFail()) return;
  const g = new Guest('again', { nvme });
  try {
    await g.waitConsole(/\[own\] httpd: listening/, 180_000);
    assert.not.match(g.console(), /no state filesystem yet/);
    const log: string[] = g.ctl('log').log;
    assert.ok(log.some((l) => /^== stopped at/.test(l)), `the first boot's log: ${log.join('\n')}`);
    assert.ok(log.filter((l) => /^== boot at/.test(l)).length >= 2);
    // The nbd app's data survived the reboot on the drive.
    await g.waitConsole(/\[nbd\] nbd: listening/, 60_000);
    const back = join(dir, 'nbd-again.raw');
    const get = sh(`ip netns exec ${NS} nbdcopy ${NBD} ${back}`, 120_000);
    assert.is(get.status, 0, get.out);
    assert.ok(readFileSync(back).subarray(0, 8 << 20).equals(readFileSync(nbdData)), 'the data written before the reboot reads back');
    assert.match(g.ctl('shutdown').ok, /shutting down/);
    assert.is(await g.poweredOff(60_000), 0);
  } finally {
    g.kill();
  }
});

test('bad configurations give one clear line on the console and a clean power-off', async () => {
  if (skipOrFail()) return;
  const cases: { name: string; files: Record<string, string>; nvmeMib?: number; want: RegExp }[] = [
    {
      name: 'missing-nic',
      files: { 'etc/libretto/system.json': JSON.stringify({ ...baseSystem, nic: { ...baseSystem.nic, packet: '0000:00:09.0' } }) },
      want: /^libretto guest: \/etc\/libretto\/system\.json: nic\.packet: no network device `0000:00:09\.0` \(by name, PCI address or MAC; have: eth0 52:54:00:00:20:10 at 0000:00:04\.0, eth1 52:54:00:00:20:11 at 0000:00:06\.0\)$/m,
    },
    {
      name: 'missing-cwasm',
      files: { 'etc/libretto/system.json': JSON.stringify({ ...baseSystem, apps: [{ ...baseSystem.apps[0], image: '/lib/libretto/kv.cwasm' }] }) },
      want: /^libretto guest: \/etc\/libretto\/system\.json: apps\[0\]\.image: \/lib\/libretto\/kv\.cwasm: no such file$/m,
    },
    {
      name: 'over-state',
      files: {
        'etc/libretto/system.json': JSON.stringify({
          ...baseSystem,
          apps: baseSystem.apps.map((a: any) => (a.block ? { ...a, block: { ...a.block, namespaces: [{ ...a.block.namespaces[0], offset: '32M' }] } } : a)),
        }),
      },
      want: /^libretto guest: \/etc\/libretto\/system\.json: apps\[2\]\.block\.namespaces\[0\]\.offset: 32 MiB is inside the drive's state filesystem \(the first 64 MiB\)$/m,
    },
    {
      name: 'small-drive',
      files: {},
      nvmeMib: 96,
      want: /^libretto guest: \/etc\/libretto\/guest\.json: drive nvme0n1 at 0000:00:05\.0: 96 MiB, too small for its namespaces \(state 64 MiB \+ nbd 128 MiB = 192 MiB\)$/m,
    },
  ];
  for (const c of cases) {
    const extra = Object.keys(c.files).length ? overlay(c.name, c.files) : undefined;
    const g = new Guest(c.name, { nvme: join(dir, `${c.name}.img`), nvmeMib: c.nvmeMib, extra });
    try {
      assert.is(await g.poweredOff(120_000), 0, `${c.name}: QEMU exits 0 after the guest powers off`);
      const con = g.console();
      assert.match(con, c.want, `${c.name}: the clear line; console:\n${con}`);
      assert.match(con, /bad configuration \(the line above says why\); powering off/);
      // One line says why: nothing else from libretto complains.
      assert.is(con.split('\n').filter((l) => /^libretto guest: /.test(l)).length, 1, con);
      console.log(`    ${c.name}: ${con.match(c.want)![0]}`);
    } finally {
      g.kill();
    }
  }
});

test.run();
