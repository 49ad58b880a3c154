/**
 * Helpers for tests that put libretto on a real TAP device with Linux on
 * the other side. They need root (CAP_NET_ADMIN); outside CI they skip and
 * say why, inside CI they must run.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { BIN } from './helpers.ts';

export function canAdminNetwork(): { ok: boolean; why: string } {
  if (process.getuid?.() !== 0) return { ok: false, why: 'needs root for TAP devices (runs in CI, which is root)' };
  for (const tool of ['ip', 'nc', 'ping', 'ss']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return { ok: false, why: `needs ${tool} (tools/debian-packages.txt; make test installs it as root)` };
  }
  return { ok: true, why: '' };
}

export function sh(cmd: string, timeoutMs = 60_000): { status: number | null; out: string } {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 });
  return { status: r.status, out: (r.stdout ?? '') + (r.stderr ?? '') };
}

/** A TAP device with an address on the Linux side, removed by `remove`. */
export class TapDevice {
  constructor(
    readonly name: string,
    readonly linuxIp: string,
    readonly prefix = 24,
  ) {
    sh(`ip link del ${name} 2>/dev/null`);
    const r = sh(`ip tuntap add dev ${name} mode tap && ip addr add ${linuxIp}/${prefix} dev ${name} && ip link set ${name} up`);
    if (r.status !== 0) throw new Error(`cannot make TAP ${name}: ${r.out}`);
  }
  remove(): void {
    sh(`ip link del ${this.name} 2>/dev/null`);
  }
}

/** `bin/libretto app` in the background; its output is collected. */
export class App {
  readonly proc: ChildProcess;
  out = '';
  exited: Promise<number | null>;
  constructor(args: string[]) {
    this.proc = spawn(BIN, ['app', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d) => (this.out += d));
    this.proc.stderr!.on('data', (d) => (this.out += d));
    this.exited = new Promise((resolve) => this.proc.on('close', (code) => resolve(code)));
  }
  /** Wait until the output matches, or throw after `ms`. */
  async waitFor(re: RegExp, ms = 30_000): Promise<RegExpMatchArray> {
    const t0 = Date.now();
    for (;;) {
      const m = this.out.match(re);
      if (m) return m;
      if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${re}; output so far:\n${this.out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  async stop(): Promise<void> {
    this.proc.kill('SIGTERM');
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, 5000))]);
    this.proc.kill('SIGKILL');
  }
}
