/**
 * Times at the edges of u64, in a whole system: the host's clock
 * (`LIBRETTO_CLOCK_OFFSET_NS`) started past 2^53 ns, as on a host up 104
 * days, and just below 2^62, so it crosses QuickJS's "no deadline" during
 * the test. Every time the components see (the link's, the network
 * server's rings', the stack's sockets', the app's POSIX clock) is then a
 * u64 that a JavaScript number holds only to the nearest double. The
 * httpd image behind the network server on a TAP device must serve as
 * usual: pages byte-exact over keep-alive, ping answered, wrk clean, its
 * header timeout firing on time (2 s here), and `ctl` working.
 *
 * Needs root (TAP device): skipped outside CI without it, a failure under CI.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, component, ROOT, run } from './helpers.ts';
import { canAdminNetwork, sh, TapDevice } from './net.ts';

const gate = ((g) => (g.ok && sh('command -v wrk && command -v curl').status !== 0 ? { ok: false, why: 'needs wrk and curl (tools/debian-packages.txt; make test installs them as root)' } : g))(canAdminNetwork());
const dir = mkdtempSync(join(tmpdir(), 'libretto-clock-'));
const TAP = 'lclk0';
const IP = '10.66.3.2';
const HEADER_TIMEOUT_S = 2;

function skipOrFail(): boolean {
  if (gate.ok) return false;
  if (process.env.CI) throw new Error(`TAP tests must run in CI: ${gate.why}`);
  console.log(`    skipped: ${gate.why}`);
  return true;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Boot httpd with the host's clock starting at `offset` ns; returns the output, a stop function and the ctl socket. */
async function boot(offset: bigint) {
  const manifest = join(dir, 'clock.json');
  const ctl = join(dir, 'clock.sock');
  writeFileSync(
    manifest,
    JSON.stringify({
      name: 'lclk',
      control: ctl,
      nic: { tap: TAP, mac: '02:00:00:00:66:31' },
      shared_ip: `${IP}/24`,
      network_server: component('network-server.wasm'),
      apps: [{ name: 'web', image: join(ROOT, 'build/images/httpd.wasm'), ports: { tcp: [80] }, args: { port: 80, header_timeout_s: HEADER_TIMEOUT_S } }],
    }),
  );
  const started = Date.now();
  const proc = spawn(BIN, ['run', manifest], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LIBRETTO_CLOCK_OFFSET_NS: String(offset) } });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.on('close', (c) => r(c)));
  while (!/\[web\] httpd: listening on port 80/.test(out)) {
    if (Date.now() - started > 60_000) throw new Error(`httpd did not come up:\n${out}`);
    await sleep(100);
  }
  return {
    started,
    out: () => out,
    ctl: (...a: string[]) => run(BIN, ['ctl', '--socket', ctl, ...a], { timeoutMs: 30_000 }),
    async stop() {
      proc.kill('SIGTERM');
      const code = await Promise.race([exited, sleep(10_000).then(() => null)]);
      proc.kill('SIGKILL');
      return code;
    },
  };
}

/** Pages over one keep-alive connection: every one 200 and of its size. */
function curlPages(): void {
  const urls = ['/128k', '/4k', '/64k', '/', '/16k'].map((p) => `http://${IP}${p}`);
  const r = sh(`curl -s -m 20 ${urls.map((u) => `-o /dev/null -w '%{http_code} %{size_download} %{num_connects}\\n' ${u}`).join(' ')}`, 30_000);
  const lines = r.out.trim().split('\n');
  assert.is(lines.length, urls.length, r.out);
  const sizes = [131072, 4096, 65536, -1, 16384];
  lines.forEach((l, i) => {
    const [code, size] = l.split(' ');
    assert.is(code, '200', `${urls[i]}: ${l}`);
    if (sizes[i] >= 0) assert.is(Number(size), sizes[i], `${urls[i]}: ${l}`);
  });
  assert.equal(lines.map((l) => l.split(' ')[2]), ['1', '0', '0', '0', '0'], 'one connection, kept alive');
}

/** A header that never ends: 408 and a close after the header timeout. */
async function headerTimeout(): Promise<number> {
  const s = net.connect(80, IP);
  let got = '';
  s.on('data', (d) => (got += d.toString('latin1')));
  s.on('error', () => {});
  await new Promise<void>((r, j) => {
    s.once('connect', () => r());
    s.once('error', j);
  });
  const t0 = Date.now();
  s.write('GET / HTTP/1.1\r\nHost: x\r\n');
  const closed = await new Promise<boolean>((r) => {
    s.once('close', () => r(true));
    setTimeout(() => r(false), 15_000);
  });
  s.destroy();
  assert.ok(closed, `the connection was not closed: ${JSON.stringify(got)}`);
  assert.match(got, /^HTTP\/1\.1 408 /, got);
  return (Date.now() - t0) / 1000;
}

const CASES: [string, bigint, number][] = [
  // [what, where the clock starts, how long after boot the second round waits for]
  ['past 2^53 ns (a host up 104 days)', 2n ** 53n + 1_000_000_000n, 0],
  ['across 2^62 ns (QuickJS\'s "no deadline")', 2n ** 62n - 6_000_000_000n, 7_000],
];

for (const [what, offset, secondRoundAt] of CASES) {
  test(`the clock ${what}: httpd serves, ping answers, the header timeout fires on time, wrk is clean`, async () => {
    if (skipOrFail()) return;
    const tap = new TapDevice(TAP, '10.66.3.1');
    let sys: Awaited<ReturnType<typeof boot>> | null = null;
    try {
      sys = await boot(offset);
      assert.match(sys.out(), /components' clocks start at \d+ ns/);
      curlPages();
      const ping = sh(`ping -c 3 -i 0.2 -W 2 ${IP}`);
      assert.match(ping.out, / 0% packet loss/, ping.out);
      const after = await headerTimeout();
      assert.ok(after >= HEADER_TIMEOUT_S - 0.2 && after < HEADER_TIMEOUT_S + 3, `408 after ${after} s, the timeout is ${HEADER_TIMEOUT_S} s`);
      // The second round, for the case that crosses 2^62, after the crossing.
      const wait = sys.started + secondRoundAt - Date.now();
      if (wait > 0) await sleep(wait);
      curlPages();
      const w = run('wrk', ['-t2', '-c10', '-d1s', '--timeout', '10s', `http://${IP}/4k`], { timeoutMs: 30_000 });
      const out = w.stdout + w.stderr;
      assert.not.match(out, /Socket errors|Non-2xx/, out);
      assert.match(out, /[1-9]\d* requests in/, out);
      const apps = sys.ctl('apps');
      assert.is(apps.status, 0, apps.stderr);
      assert.match(apps.stdout, /^web\s.*\brunning\s*$/m, apps.stdout);
      assert.not.match(sys.out(), /trap|panic|crashed|internal error/i, sys.out().slice(-3000));
    } finally {
      const code = await sys?.stop();
      if (sys && code !== 0) console.log(`the system exited ${code}:\n${sys.out().slice(-3000)}`);
      tap.remove();
    }
  });
}

test('a clock offset that is not a number is refused with one line and exit 2', () => {
  const r = spawn(BIN, ['run', join(dir, 'none.json')], { env: { ...process.env, LIBRETTO_CLOCK_OFFSET_NS: 'soon' } });
  return new Promise<void>((resolve) => {
    let err = '';
    r.stderr.on('data', (d) => (err += d));
    r.on('close', (code) => {
      assert.is(code, 2);
      assert.match(err, /^libretto: LIBRETTO_CLOCK_OFFSET_NS=soon: not a number of nanoseconds from 0 to 2\^63\n$/);
      resolve();
    });
  });
});

test.run();
